"""Measuring helpers shared by `ttt-hf benchmark` and `ttt-hf precision`: the machine, autocast, timing on CPU
and GPU, the memory of a step, and the layers they measure."""

import os
import platform
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch

from ..modeling import TTTViTConfig
from ..modeling.fused_mlp import fused_mlp_available

# name -> config overrides of a mixer
LAYER_MIXERS = {
    "ttt_mlp": dict(mixer="ttt_mlp"),
    "ttt_mlp (autograd)": dict(mixer="ttt_mlp", inner_gradient="autograd"),
    "ttt_mlp (triton)": dict(mixer="ttt_mlp", inner_kernel="triton"),  # GPU only: fused_mlp.py's kernels
    "ttt_linear": dict(mixer="ttt_linear"),
    "linear_attention": dict(mixer="linear_attention"),
    "self_attention (SDPA)": dict(mixer="self_attention"),
}


def machine_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads "
        f"({os.cpu_count()} CPUs), torch {torch.__version__}"
    )


def autocast_context(device: str, dtype: torch.dtype):
    """The context of a measured call: bfloat16 is autocast mixed precision (float32 weights), as in training."""
    if dtype not in (torch.bfloat16, torch.float16):
        return nullcontext()
    return torch.autocast(device.split(":")[0], dtype=dtype)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_call(fn, device: str, repeats: int, warmup: int) -> float:
    """Median seconds of `fn()` over `repeats` after `warmup` calls (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            tic = time.perf_counter()
            fn()
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


@contextmanager
def _saved_tensor_bytes(exclude: set[int], counter: dict):
    """Count unique storages autograd saves for backward inside the block (excluding `exclude` data_ptrs)."""
    seen = set()

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen and ptr not in exclude:
            seen.add(ptr)
            counter["bytes"] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def memory_of(step, device: str, params) -> int:
    """Peak CUDA bytes of `step()` above what was allocated before, or CPU activation bytes (module doc)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    counter = {"bytes": 0}
    with _saved_tensor_bytes({p.untyped_storage().data_ptr() for p in params}, counter):
        step()
    return counter["bytes"]


def layer_config(overrides: dict, width: int = 192, heads: int = 3) -> TTTViTConfig:
    config = TTTViTConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=4 * width, **overrides)
    config._attn_implementation = "sdpa"
    return config


def repeats_another_row(name: str, device: str) -> bool:
    """Whether row `name` would only repeat another: the fused kernels fall back to PyTorch's ops off the GPU,
    so their "(triton)" rows run on CUDA with Triton installed — or on the CPU under TRITON_INTERPRET=1, where
    only the memory column means something (bytes saved for backward)."""
    return "(triton)" in name and not fused_mlp_available(torch.empty(0, device=device))
