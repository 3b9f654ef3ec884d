"""Time the fused MTTT-MLP kernels (modeling/fused_mlp.py) over their launch settings on a GPU, then the layer
with the fastest ones against the PyTorch path and SDPA in the same process.

    python scripts/tune_fused_kernels.py --output_dir OUT [--tokens 50176] [--budget_s 150]

Each kernel runs alone at one image, 3 heads of width 64, hidden width 256, bfloat16 (ViT-Ti's MTTT-MLP), with
triton.testing.do_bench. Writes OUT/tune_kernels.csv (every setting tried) and OUT/tune_layers.csv, and prints
the fastest settings as a LAUNCH table to paste into fused_mlp.py.
"""

import argparse
import itertools
import os
import time

import torch

from ttt_hf.bench.benchmark import benchmark_layer
from ttt_hf.bench.measure import machine_description
from ttt_hf.common.run_files import write_csv
from ttt_hf.modeling import fused_mlp
from ttt_hf.modeling.configuration_ttt_vit import MIXER_PRESETS

GRID = {  # settings tried per kernel: token tile, hidden slice, warps
    "forward": list(itertools.product((64, 128, 32), (64, 128, 256), (4, 8))),
    "backward": list(itertools.product((64, 32, 128), (64, 128, 256, 32), (4, 8))),
    "param_grad_backward": list(itertools.product((32, 64, 16), (64, 128, 32), (4, 8))),
}


def kernel_calls(tokens: int, heads: int = 3, k: int = 64, m: int = 256):
    """One zero-argument call per kernel kind, on random bfloat16 inputs."""
    dev, dt = "cuda", torch.bfloat16
    x, g = (torch.randn(1, heads, tokens, k, device=dev, dtype=dt) for _ in range(2))
    w1, w2 = torch.randn(1, heads, k, m, device=dev) / 8, torch.randn(1, heads, m, k, device=dev) / 16
    b1, b2 = torch.zeros(1, heads, m, device=dev), torch.zeros(1, heads, k, device=dev)
    dg1, dgb1, dg2 = torch.randn(1, heads, k, m, device=dev), torch.randn(1, heads, m, device=dev), w2.clone()
    return {
        "forward": lambda: fused_mlp._forward(x, w1, b1, w2, b2),
        "backward": lambda: fused_mlp._weight_side("backward", x, g, w1, b1, w2, token_outputs=1, WITH_DX=True),
        "param_grad_backward": lambda: fused_mlp._weight_side(
            "param_grad_backward", x, g, w1, b1, w2, extra_inputs=(dg1, dgb1, dg2), token_outputs=2
        ),
    }


def tune(tokens: int, budget_s: float, out_dir: str) -> dict:
    import triton.testing

    calls, best, rows = kernel_calls(tokens), {}, []
    for kind, settings in GRID.items():
        default, start = dict(fused_mlp.LAUNCH[kind]), time.time()
        for block_n, block_m, warps in settings:
            if time.time() - start > budget_s / len(GRID):
                break
            fused_mlp.LAUNCH[kind] = {"BLOCK_N": block_n, "BLOCK_M": block_m, "num_warps": warps}
            try:
                ms = triton.testing.do_bench(calls[kind], warmup=10, rep=40)
            except Exception as error:  # out of shared memory or registers: not a candidate
                ms, note = float("nan"), type(error).__name__
            else:
                note = "default" if fused_mlp.LAUNCH[kind] == default else ""
            rows.append({"kernel": kind, "BLOCK_N": block_n, "BLOCK_M": block_m, "num_warps": warps, "ms": ms,
                         "note": note})  # fmt: skip
            print(f"{kind:20s} N={block_n:3d} M={block_m:3d} warps={warps}  {ms:8.3f} ms {note}", flush=True)
            if ms == ms and (kind not in best or ms < best[kind][1]):
                best[kind] = (dict(fused_mlp.LAUNCH[kind]), ms)
        fused_mlp.LAUNCH[kind] = best[kind][0] if kind in best else default
    write_csv(rows, os.path.join(out_dir, "tune_kernels.csv"))
    print("LAUNCH = {")
    for kind, (cfg, ms) in best.items():
        print(f'    "{kind}": {cfg},  # {ms:.3f} ms at {tokens} tokens')
    print("}")
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tokens", type=int, default=50176)
    parser.add_argument("--budget_s", type=float, default=150.0, help="stop trying settings after this long")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("tune_fused_kernels.py times CUDA kernels: run it on a machine with a GPU")
    os.makedirs(args.output_dir, exist_ok=True)
    print("#", machine_description("cuda"))
    tune(args.tokens, args.budget_s, args.output_dir)
    rows = []
    for name, fields, compile in [
        ("ttt_mlp (triton)", dict(MIXER_PRESETS["mlp"].fields, inner_kernel="triton"), False),
        ("ttt_mlp", MIXER_PRESETS["mlp"].fields, False),
        ("self_attention (SDPA)", MIXER_PRESETS["attn"].fields, False),
        ("ttt_mlp (triton)", dict(MIXER_PRESETS["mlp"].fields, inner_kernel="triton"), True),
        ("ttt_mlp", MIXER_PRESETS["mlp"].fields, True),
    ]:
        row = benchmark_layer(name, fields, args.tokens, device="cuda", dtype=torch.bfloat16, compile=compile,
                              repeats=20, warmup=5)  # fmt: skip
        row["compiled"] = compile
        rows.append(row)
        print(f"{name:24s} compiled={compile!s:5s} fwd {row['forward_ms']:.2f} ms  fwd+bwd "
              f"{row['forward_backward_ms']:.2f} ms  {row['memory_mb']:.0f} MB", flush=True)  # fmt: skip
    write_csv(rows, os.path.join(args.output_dir, "tune_layers.csv"))


if __name__ == "__main__":
    main()
