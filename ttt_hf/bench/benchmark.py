"""Speed and memory of the token mixers and models, across sequence lengths (`ttt-hf benchmark --help`).

Layer level: one mixer at ViT-Tiny width (192, 3 heads) on N tokens, batch 1 by default — forward time,
forward+backward time (median of repeats after warm-up) and memory. Model level: training-step and
inference images/second of whole models — ViT-S/16 at 224² for every mixer next to transformers' own
`ViTForImageClassification` (SDPA) of the same size, and the ViT-Ti pixel model at growing resolutions.

Precision: float32, or bfloat16 mixed precision — the module keeps float32 weights and runs under
`torch.autocast`, which is what `Trainer(bf16=True)` does (SDPA then takes a fused bfloat16 kernel on GPU).

Memory: on CUDA the peak allocated bytes of the measured call (`torch.cuda.max_memory_allocated`). On CPU
PyTorch keeps no allocator statistics, so the figure is the activation memory of a training step: the
bytes autograd saves for the backward pass (unique storages, parameters excluded), which is what grows
with N. Results go to stdout (a table), CSV, and a log-log PNG of time and memory against N.
"""

import argparse
import csv
import os
import re

import torch

from ..modeling import MIXER_PRESETS, TTTViTConfig, TTTViTForImageClassification
from ..modeling.ttt_layers import MIXER_CLASSES
from .measure import (
    LAYER_MIXERS,
    autocast_context,
    layer_config,
    machine_description,
    memory_of,
    repeats_another_row,
    sync,
    time_call,
)

# one preset per kind of mixer, at its plain settings (mlp, linear, linattn, attn): the registry's one-field entries
BASE_MIXER_SUFFIXES = tuple(suffix for suffix, preset in MIXER_PRESETS.items() if len(preset.fields) == 1)
LAYER_TOKENS = (196, 784, 3136, 12544, 50176)


def benchmark_layer(name, overrides, tokens, *, batch=1, width=192, heads=3, device="cpu", dtype=torch.float32,
                    compile=False, repeats=5, warmup=2, profile_path=None) -> dict:  # fmt: skip
    config = layer_config(overrides, width, heads)
    mixer = MIXER_CLASSES[config.mixer](config).to(device)
    x = torch.randn(batch, tokens, width, device=device, requires_grad=True)
    forward = torch.compile(mixer) if compile else mixer

    def fwd():
        with torch.no_grad(), autocast_context(device, dtype):
            forward(x)
        sync(device)

    def fwd_bwd():
        with autocast_context(device, dtype):
            out, _ = forward(x)
        out.float().square().mean().backward()
        sync(device)

    params = list(mixer.parameters())
    result = {"level": "layer", "name": name, "tokens": tokens, "batch": batch, "width": width}
    result["forward_ms"] = 1000 * time_call(fwd, device, repeats, warmup)
    result["forward_backward_ms"] = 1000 * time_call(fwd_bwd, device, repeats, warmup)
    result["memory_mb"] = memory_of(fwd_bwd, device, params) / 2**20
    if profile_path:
        header = f"{name}, N = {tokens}, batch {batch}, {dtype}, compile={compile}"
        result["matmul_share"] = profile_step(fwd_bwd, profile_path, header, device)
    return result


# kernel-name pieces of matrix-product kernels (fused_mlp.py's kernels count: they are mostly products)
MATMUL_KERNELS = ("gemm", "nvjet", "cutlass", "xmma", "flash", "fmha", "attention", "convolve",
                  "_mlp_forward_kernel", "_mlp_backward_kernel", "_mlp_param_grad_backward_kernel")  # fmt: skip
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::_scaled_dot_product")


def profile_step(step, path: str, header: str, device: str) -> float:
    """Profile one call of `step` (already warm: called after its timing); write the operators by self time to
    `path` and return the share of the matrix products (the rest is elementwise and reduction work)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        step()
    events = prof.key_averages()
    if cuda:  # the kernels themselves (compiled code runs Triton kernels that no aten operator owns)
        rows = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        is_matmul = lambda key: any(s in key.lower() for s in MATMUL_KERNELS)  # noqa: E731
        attr = "self_device_time_total"
    else:
        rows = [e for e in events if e.key.startswith("aten::")]
        is_matmul = lambda key: key.startswith(MATMUL_OPS)  # noqa: E731
        attr = "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in rows) or 1.0
    matmul = sum(getattr(e, attr) for e in rows if is_matmul(e.key))
    with open(path, "w") as f:
        f.write(f"# {machine_description(device)}; {header}\n")
        f.write(f"# matrix products: {100 * matmul / total:.1f} % of {'the kernels' if cuda else 'the operators'}' "
                f"time ({total / 1000:.2f} ms in all)\n")  # fmt: skip
        f.write(events.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=50))
    return matmul / total


def hf_vit_small(num_labels: int = 1000):
    """transformers' own ViT-S/16 (SDPA), the reference for the model-level numbers."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                       image_size=224, patch_size=16, num_labels=num_labels, attn_implementation="sdpa")  # fmt: skip
    return ViTForImageClassification(config)


def benchmark_model(name, model, image_size, channels=3, *, batch=8, device="cpu", dtype=torch.float32,
                    compile=False, repeats=3, warmup=1, profile_path=None) -> dict:  # fmt: skip
    model = model.to(device).train()
    forward = torch.compile(model) if compile else model
    x = torch.randn(batch, channels, image_size, image_size, device=device)
    labels = torch.randint(0, model.config.num_labels, (batch,), device=device)

    def train_step():
        with autocast_context(device, dtype):
            loss = forward(pixel_values=x, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        sync(device)

    def infer():
        with torch.no_grad(), autocast_context(device, dtype):
            forward(pixel_values=x)
        sync(device)

    train_s = time_call(train_step, device, repeats, warmup)
    infer_s = time_call(infer, device, repeats, warmup)
    tokens = (image_size // model.config.patch_size) ** 2
    result = {"level": "model", "name": name, "tokens": tokens, "batch": batch, "width": model.config.hidden_size,
              "forward_ms": 1000 * infer_s, "forward_backward_ms": 1000 * train_s,
              "train_images_per_s": batch / train_s, "infer_images_per_s": batch / infer_s,
              "memory_mb": memory_of(train_step, device, list(model.parameters())) / 2**20}  # fmt: skip
    if profile_path:
        header = f"{name} training step, batch {batch}, {dtype}, compile={compile}"
        result["matmul_share"] = profile_step(train_step, profile_path, header, device)
    return result


def model_suite(quick: bool, model_batch: int = 8, pixel_batch: int = 1, pixel_sizes=(32, 64, 112, 224)):
    """(name, model factory, image size, channels, batch) of the model-level benchmark."""
    if quick:
        small = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96, num_labels=10)
        return [
            (
                f"{mixer} tiny/8 @32",
                lambda m=mixer: TTTViTForImageClassification(
                    TTTViTConfig(image_size=32, patch_size=8, mixer=m, **small)
                ),
                32,
                3,
                2,
            )
            for mixer in ("ttt_mlp", "ttt_linear")
        ]
    suite = [("transformers ViT-S/16 (SDPA)", hf_vit_small, 224, 3, model_batch)]
    for suffix in BASE_MIXER_SUFFIXES:
        name = f"ttt-vit-small16-{suffix}"
        suite.append((name, lambda n=name: TTTViTForImageClassification(TTTViTConfig.from_preset(n)), 224, 3,
                      model_batch))  # fmt: skip
    suite.append(
        (
            "ttt-vit-small16-mlp (triton)",
            lambda: TTTViTForImageClassification(
                TTTViTConfig.from_preset("ttt-vit-small16-mlp", inner_kernel="triton")
            ),
            224,
            3,
            model_batch,
        )
    )
    for size in pixel_sizes:
        # at 224² (50,176 tokens) a step would keep ~20 GB of activations per image: checkpoint every block
        suite.append(
            (
                f"ttt-vit-tiny-pixel-mlp @{size}{' (checkpointed)' if size == 224 else ''}",
                lambda s=size: pixel_model(s, checkpointing=s == 224),
                size,
                3,
                pixel_batch,
            )
        )
    return suite


def pixel_model(image_size: int, checkpointing: bool = False):
    model = TTTViTForImageClassification(TTTViTConfig.from_preset("ttt-vit-tiny-pixel-mlp", image_size=image_size))
    if checkpointing:
        model.activation_checkpointing_enable()
    return model


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'level':6s} {'name':36s} {'N':>6s} {'B':>3s} {'fwd ms':>10s} {'fwd+bwd ms':>11s} {'mem MB':>9s} "
        f"{'train img/s':>11s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        train = f"{r['train_images_per_s']:11.2f}" if "train_images_per_s" in r else f"{'':11s}"
        print(
            f"{r['level']:6s} {r['name'][:36]:36s} {r['tokens']:6d} {r['batch']:3d} {r['forward_ms']:10.2f} "
            f"{r['forward_backward_ms']:11.2f} {r['memory_mb']:9.1f} {train}"
        )


def write_csv(rows: list[dict], path: str, machine: str) -> None:
    keys = ["level", "name", "tokens", "batch", "width", "forward_ms", "forward_backward_ms", "memory_mb",
            "train_images_per_s", "infer_images_per_s", "matmul_share", "device", "dtype", "compiled",
            "machine"]  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: row.get(k, "") for k in keys}, "machine": machine})


def _fresh_compile(args) -> None:
    """Every measured module gets its own compilation: dynamo's recompile limit counts across models."""
    if args.compile:
        torch._dynamo.reset()


def profile_path(args, name: str, tokens: int) -> str | None:
    """Where to write the profile of row `name` at `tokens`, if `--profile` matches "name@tokens"."""
    if not args.profile or not re.search(args.profile, f"{name}@{tokens}"):
        return None
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{name}_{tokens}").strip("_")
    return os.path.join(args.output_dir, f"profile_{args.device.split(':')[0]}_{args.dtype}"
                        f"{'_compiled' if args.compile else ''}_{slug}.txt")  # fmt: skip


def _skip_row(args, name: str) -> bool:
    return bool(args.only and not re.search(args.only, name)) or repeats_another_row(name, args.device)


def run(args) -> list[dict]:
    dtype = getattr(torch, args.dtype)
    tokens = [int(n) for n in args.tokens.split(",")] if args.tokens else ([16, 64] if args.quick else LAYER_TOKENS)
    width, heads = (24, 3) if args.quick else (192, 3)
    extra = {"device": args.device, "dtype": args.dtype, "compiled": args.compile}
    rows = []
    if args.level in ("all", "layer"):
        for name, overrides in LAYER_MIXERS.items():
            if _skip_row(args, name):
                continue
            _fresh_compile(args)  # one compilation per mixer (later sizes reuse it with dynamic shapes)
            for n in tokens:
                if "self_attention" in name and n > args.max_attention_tokens:
                    continue
                if "autograd" in name and (n > args.max_autograd_tokens or args.compile):
                    continue  # the reference path: eager only (autograd.grad inside a compiled graph breaks it)
                rows.append({**benchmark_layer(name, overrides, n, batch=args.batch, width=width, heads=heads,
                                               device=args.device, dtype=dtype, compile=args.compile,
                                               repeats=args.repeats, warmup=args.warmup,
                                               profile_path=profile_path(args, name, n)), **extra})  # fmt: skip
                if args.verbose:
                    print_table(rows[-1:])
    if args.level in ("all", "model"):
        sizes = [int(s) for s in args.pixel_sizes.split(",")]
        for name, factory, size, channels, batch in model_suite(args.quick, args.model_batch, args.pixel_batch, sizes):
            if _skip_row(args, name):
                continue
            tokens = (size // (1 if "pixel" in name else 16)) ** 2
            if args.max_model_tokens and tokens > args.max_model_tokens:
                continue
            torch.manual_seed(0)
            _fresh_compile(args)
            rows.append({**benchmark_model(name, factory(), size, channels, batch=batch, device=args.device,
                                           dtype=dtype, compile=args.compile, repeats=max(1, args.repeats // 2),
                                           warmup=max(1, args.warmup // 2),
                                           profile_path=profile_path(args, name, tokens)), **extra})  # fmt: skip
            if args.verbose:
                print_table(rows[-1:])
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="ttt-hf benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds: a CI-sized check that all runs")
    parser.add_argument("--level", choices=("all", "layer", "model"), default="all")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--compile", action="store_true", help="torch.compile the mixer / model")
    parser.add_argument("--tokens", default=None, help="comma-separated N for the layer level")
    parser.add_argument("--batch", type=int, default=1, help="layer-level batch size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max_attention_tokens", type=int, default=50176, help="skip SDPA above this N")
    parser.add_argument("--max_autograd_tokens", type=int, default=12544, help="skip the autograd reference above N")
    parser.add_argument("--max_model_tokens", type=int, default=None, help="skip models with more tokens")
    parser.add_argument("--model_batch", type=int, default=8, help="batch of the ViT-S/16 models")
    parser.add_argument("--pixel_batch", type=int, default=1, help="batch of the ViT-Ti pixel models")
    parser.add_argument("--pixel_sizes", default="32,64,112,224", help="image sizes of the pixel model")
    parser.add_argument("--only", default=None, help="regular expression: run only the rows whose name matches")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="REGEX",
        help='profile the training step of rows whose "name@N" matches, e.g. "ttt_mlp@50176" '
        "(operator table to profile_*.txt, matrix-product share in the CSV)",
    )
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--output_dir", default="outputs/benchmark")
    parser.add_argument("--verbose", action="store_true", help="print each row as it finishes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_description(args.device)
    print(f"# {machine}; {args.dtype}{', torch.compile' if args.compile else ''}")
    os.makedirs(args.output_dir, exist_ok=True)
    rows = run(args)
    print_table(rows)
    compiled, quick = "_compiled" if args.compile else "", "_quick" if args.quick else ""
    tag = f"{args.device.split(':')[0]}_{args.dtype}{compiled}{quick}"
    tag += f"_{args.tag}" if args.tag else ""
    write_csv(rows, os.path.join(args.output_dir, f"benchmark_{tag}.csv"), machine)
    if any(r["level"] == "layer" for r in rows):
        from .plots import plot_layers  # matplotlib only when plotting

        plot_layers(rows, os.path.join(args.output_dir, f"layers_{tag}.png"), f"{machine}; {args.dtype}")
    return rows


if __name__ == "__main__":
    main()
