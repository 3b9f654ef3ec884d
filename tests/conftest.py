import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
# The fused Triton kernels run on the tests' CPU tensors in Triton's interpreter (read when the kernels are
# defined: before ttt_hf's import); on a GPU, test_fused_kernels_on_cuda runs them compiled in a subprocess.
# (setdefault: that subprocess sets "0" first; so would a shell, which makes the CPU kernel tests fail.)
os.environ.setdefault("TRITON_INTERPRET", "1")

import ttt_hf  # noqa: E402  (registers the Auto classes)
from ttt_hf import TTTViTConfig  # noqa: E402

TINY = dict(
    image_size=8,
    patch_size=2,
    num_channels=3,
    hidden_size=12,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=24,
)


def tiny_config(**overrides) -> TTTViTConfig:
    """A TTT-ViT small enough for float64 checks: 16 tokens of width 12, 3 heads of width 4."""
    return TTTViTConfig(**{**TINY, **overrides})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
