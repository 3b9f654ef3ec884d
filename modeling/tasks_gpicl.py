"""GPICL's task family (Kirsch et al., arXiv 2212.04458, section 3), shared by meta-training (ttt_hf.gpicl_tasks)
and the in-context classification pipeline."""

import torch

# torch's CPU generator keeps only the low 32 bits of a seed, so two seeds name the same task when they agree
# there. Meta-testing uses seeds from UNSEEN_TASK_OFFSET on (low bits 0, 1, 2, ..., as many as it reads), and the
# pipeline's default projection the one below it (low bits 2^32 - 1); pools of meta-training tasks start at
# POOL_TASK_OFFSET (low bits 2^31 on), so that a pool never holds an unseen task. Fresh tasks draw their seeds at
# random: one meets a given unseen task with probability 2^-32.
UNSEEN_TASK_OFFSET = 2**40
POOL_TASK_OFFSET = 2**31


def random_task(seed: int, input_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task `seed` of GPICL's task family: a projection [N_x, N_x] with entries N(0, 1 / N_x) applied to every
    input (x A^T), and a permutation of the labels [C]."""
    g = torch.Generator().manual_seed(seed % 2**63)
    projection = torch.randn(input_dim, input_dim, generator=g) / input_dim**0.5
    return projection, torch.randperm(num_classes, generator=g)


__all__ = ["POOL_TASK_OFFSET", "UNSEEN_TASK_OFFSET", "random_task"]
