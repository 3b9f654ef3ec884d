"""GPICL's task family (Kirsch et al., arXiv 2212.04458, section 3), shared by meta-training (ttt_hf.gpicl_tasks)
and the in-context classification pipeline."""

import torch

# Task seeds from here on are never meta-training tasks (pools are seeds 0 .. n - 1, fresh tasks draw below 2^40
# only with probability 2^-22): meta-testing uses them, and the pipeline's default projection is the one below it.
UNSEEN_TASK_OFFSET = 2**40


def random_task(seed: int, input_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task `seed` of GPICL's task family: a projection [N_x, N_x] with entries N(0, 1 / N_x) applied to every
    input (x A^T), and a permutation of the labels [C]."""
    g = torch.Generator().manual_seed(seed % 2**63)
    projection = torch.randn(input_dim, input_dim, generator=g) / input_dim**0.5
    return projection, torch.randperm(num_classes, generator=g)


__all__ = ["UNSEEN_TASK_OFFSET", "random_task"]
