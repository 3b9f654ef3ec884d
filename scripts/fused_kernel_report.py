#!/usr/bin/env python
"""Compile the fused MLP kernels (modeling/fused_mlp.py) for a GPU architecture, on any machine: Triton's
compiler and the ptxas it ships need no GPU. Prints registers, spills and shared memory per kernel at the
launch settings of `fused_mlp.LAUNCH` (or --block_n/--block_m/--num_warps), to choose them without a GPU and
to catch what only compilation rejects (Triton's interpreter runs code that the compiler would not).

    python scripts/fused_kernel_report.py                       # sm_90, bfloat16, head width 64, hidden 256
    python scripts/fused_kernel_report.py --dtype fp32 --arch 80 --block_m 64
"""

import argparse
import os
import re
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp()  # compile every time (the log prints only then)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ttt_hf.modeling import fused_mlp  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
INPUTS = {"x_ptr", "z_ptr", "g_ptr"}  # the token inputs are in the compute dtype; every other pointer float32/64
KERNELS = [  # (name, kernel, LAUNCH key, extra constexprs)
    ("forward", "_mlp_forward_kernel", "forward", {}),
    ("backward (dx, dW)", "_mlp_backward_kernel", "backward", {"WITH_DX": True}),
    ("inner gradient", "_mlp_backward_kernel", "backward", {"WITH_DX": False}),
    ("inner gradient backward", "_mlp_param_grad_backward_kernel", "param_grad_backward", {}),
]


def compile_kernel(kernel, dtype: str, arch: int, constexprs: dict, num_warps: int):
    wide = "fp64" if dtype == "fp64" else "fp32"
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = f"*{dtype}" if name in INPUTS else f"*{wide}"
        else:
            signature[name] = "i32"
    constexprs = {k: v for k, v in constexprs.items() if k in kernel.arg_names}
    try:
        source = ASTSource(kernel, signature, constexprs=constexprs)
    except TypeError:  # Triton < 3.3 calls them "constants"
        source = ASTSource(kernel, signature, constants=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    parser.add_argument("--dtype", choices=("bf16", "fp32", "fp64"), default="bf16")
    parser.add_argument("--head_width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--block_n", type=int)
    parser.add_argument("--block_m", type=int)
    parser.add_argument("--num_warps", type=int)
    args = parser.parse_args(argv)
    print(f"# sm_{args.arch}, {args.dtype}, k = {args.head_width}, m = {args.hidden}, triton {triton.__version__}")
    print(
        f"{'kernel':26s} {'BLOCK_N':>7s} {'BLOCK_M':>7s} {'warps':>5s} {'registers':>9s} {'spilled B':>9s} "
        f"{'shared B':>9s}"
    )
    failed = 0
    for name, attr, kind, extra in KERNELS:
        launch = fused_mlp._launch(kind, DTYPES[args.dtype], args.head_width, args.hidden, cuda=True)
        launch.update({k: v for k, v in (("BLOCK_N", args.block_n), ("BLOCK_M", args.block_m),
                                         ("num_warps", args.num_warps)) if v})  # fmt: skip
        num_warps = launch.pop("num_warps")
        constexprs = {**launch, **extra, "M": args.hidden, "K": args.head_width}
        log = tempfile.TemporaryFile(mode="w+")
        saved, sys.stdout = os.dup(1), log  # ptxas's report is printed by Triton: capture file descriptor 1
        os.dup2(log.fileno(), 1)
        try:
            compiled = compile_kernel(getattr(fused_mlp, attr), args.dtype, args.arch, constexprs, num_warps)
            error = None
        except Exception as e:  # noqa: BLE001  (reported, then the exit status says it)
            error = e
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            sys.stdout = sys.__stdout__
        log.seek(0)
        text = log.read()
        if error is not None:
            failed += 1
            print(f"{name:26s} FAILED: {type(error).__name__}: {str(error)[:2000]}")
            continue
        regs = re.findall(r"Used (\d+) registers", text)
        spills = re.findall(r"(\d+) bytes spill stores", text)
        print(
            f"{name:26s} {launch['BLOCK_N']:7d} {launch['BLOCK_M']:7d} {num_warps:5d} {regs[-1] if regs else '?':>9s} "
            f"{spills[-1] if spills else '?':>9s} {compiled.metadata.shared:9d}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
