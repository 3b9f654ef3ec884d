"""How far float32 and bfloat16 autocast runs of each mixer are from float64 (`ttt-hf precision --help`).

For every mixer at ViT-Tiny width, one layer with random parameters is run on the same input in float64
(the reference), float32, and float32 weights under `torch.autocast(bfloat16)` (what `Trainer(bf16=True)`
does). Reported: the relative error ||out - ref|| / ||ref|| of the output, of the gradient of a fixed loss
with respect to the input, and of the gradients of all parameters together (one vector: some gradients are
exactly zero, e.g. attention's key bias), and for the TTT mixers the inner loss ratio loss(W_1) / loss(W_0)
next to float64's — the inner step must still learn when the matrix products run in bfloat16.
"""

import argparse

import torch

from ..modeling.ttt_layers import MIXER_CLASSES
from .measure import LAYER_MIXERS, autocast_context, layer_config, machine_description, repeats_another_row


def random_mixer(overrides: dict, width: int, heads: int, seed: int = 0):
    """A mixer whose every parameter is random (not the zero/one initialisations), so no term vanishes."""
    config = layer_config(overrides, width, heads)
    mixer = MIXER_CLASSES[config.mixer](config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            std = p.shape[-1] ** -0.5 if p.ndim > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=generator) * std + (1.0 if "norm_weight" in name else 0.0))
    return mixer


def relative_error(value, reference) -> float:
    return ((value.double() - reference).norm() / reference.norm()).item()


def flat(tensors):
    return torch.cat([t.double().flatten() for t in tensors])


def run_precision(mixer, x, dtype):
    """Output, gradients (input first, then parameters) and inner-loss ratio [B, H] of one step in `dtype`
    (float64 / float32: the module cast to it; bfloat16: float32 weights under autocast)."""
    compute = torch.float32 if dtype == torch.bfloat16 else dtype
    mixer = mixer.to(compute)
    x = x.detach().to(compute).requires_grad_()
    with autocast_context(x.device.type, dtype):
        out, losses = mixer(x, return_inner_losses=True)
    probe = torch.linspace(-1, 1, out.numel(), device=x.device, dtype=torch.float64).view_as(out)
    (out.double() * probe).sum().backward()
    grads = [x.grad] + [p.grad for p in mixer.parameters()]
    ratio = None if losses is None else (losses[..., 1] / losses[..., 0]).double()
    for p in mixer.parameters():
        p.grad = None
    return out.detach(), grads, ratio


def precision_rows(tokens: int = 3136, width: int = 192, heads: int = 3, batch: int = 2, device: str = "cpu"):
    rows = []
    for name, overrides in LAYER_MIXERS.items():
        if "autograd" in name or repeats_another_row(name, device) or ("triton" in name and device == "cpu"):
            continue  # (Triton's CPU interpreter has no bfloat16)
        mixer = random_mixer(overrides, width, heads).to(device)
        x = torch.randn(batch, tokens, width, device=device, generator=torch.Generator(device).manual_seed(1))
        ref_out, ref_grads, ref_ratio = run_precision(mixer, x, torch.float64)
        for dtype in (torch.float32, torch.bfloat16):
            out, grads, ratio = run_precision(mixer, x, dtype)
            rows.append({
                "name": name, "dtype": str(dtype).removeprefix("torch."), "tokens": tokens,
                "output_error": relative_error(out, ref_out),
                "input_grad_error": relative_error(grads[0], ref_grads[0]),
                "param_grad_error": relative_error(flat(grads[1:]), flat(ref_grads[1:])),
                "inner_loss_ratio": None if ratio is None else ratio.mean().item(),
                "reference_inner_loss_ratio": None if ref_ratio is None else ref_ratio.mean().item(),
            })  # fmt: skip
    return rows


def print_rows(rows) -> None:
    print(f"{'mixer':24s} {'dtype':9s} {'N':>6s} {'output':>9s} {'d input':>9s} {'d params':>9s} "
          f"{'inner loss W1/W0':>17s} {'float64':>9s}   (relative errors against float64)")  # fmt: skip
    for r in rows:
        ratio = (
            ""
            if r["inner_loss_ratio"] is None
            else f"{r['inner_loss_ratio']:17.6f} {r['reference_inner_loss_ratio']:9.6f}"
        )
        print(
            f"{r['name']:24s} {r['dtype']:9s} {r['tokens']:6d} {r['output_error']:9.2e} {r['input_grad_error']:9.2e} "
            f"{r['param_grad_error']:9.2e} {ratio}"
        )


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="ttt-hf precision", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=3136)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--heads", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"# {machine_description(args.device)}")
    rows = precision_rows(args.tokens, args.width, args.heads, args.batch, args.device)
    print_rows(rows)
    return rows


if __name__ == "__main__":
    main()
