"""GPICL's task family (Kirsch et al., arXiv 2212.04458, section 3), shared by meta-training (ttt_hf.gpicl.tasks)
and the in-context classification pipeline."""

import torch

# torch's CPU generator keeps only the low 32 bits of a seed, so two seeds name the same task when they agree
# there. Every family of seeds has its own range of low bits (SEED_FAMILIES: start, count), so that no two meet:
# meta-test tasks (low bits from 0), the pipeline's projections (its default and pipeline_accuracy's draws, from
# 2^30), pools of meta-training tasks (from 2^31) and the one fixed task of the biasing intervention (2^31 + 2^30).
# Fresh meta-training tasks draw their seeds at random: one meets a given task of a family with probability 2^-32.
UNSEEN_TASK_OFFSET = 2**40
PIPELINE_TASK_OFFSET = 2**40 + 2**30
POOL_TASK_OFFSET = 2**31
FIXED_TASK_SEED = 2**31 + 2**30
SEED_FAMILIES = {
    "unseen tasks": (UNSEEN_TASK_OFFSET, 2**30),
    "pipeline projections": (PIPELINE_TASK_OFFSET, 2**30),
    "task pools": (POOL_TASK_OFFSET, 2**30),
    "fixed task": (FIXED_TASK_SEED, 1),
}


def random_task(seed: int, input_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task `seed` of GPICL's task family: a projection [N_x, N_x] with entries N(0, 1 / N_x) applied to every
    input (x A^T), and a permutation of the labels [C]."""
    g = torch.Generator().manual_seed(seed % 2**63)
    projection = torch.randn(input_dim, input_dim, generator=g) / input_dim**0.5
    return projection, torch.randperm(num_classes, generator=g)


__all__ = [
    "FIXED_TASK_SEED",
    "PIPELINE_TASK_OFFSET",
    "POOL_TASK_OFFSET",
    "SEED_FAMILIES",
    "UNSEEN_TASK_OFFSET",
    "random_task",
]
