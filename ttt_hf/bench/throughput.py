"""Training throughput of the zoo's settings: steady training images per second of each entry's own `ttt-hf train`
command for a few steps, per data path (per image with PIL, or device-resident) and batch size, run after run in one
process on one machine (`ttt-hf throughput --help`). docs/performance.md's training table comes from it.

Steady: the median time between optimiser steps after the first (`training.StepTimer`), so neither warm-up nor
compilation counts; the per-image path's PIL work runs in the main process, as `ttt-hf train` runs it by default.
"""

import argparse
import tempfile

import torch

from .. import zoo
from ..common.run_files import write_csv
from ..vision import training
from .measure import machine_description

PATHS = {"per-image": "false", "device": "true"}


def scaled_learning_rate(entry: zoo.ZooEntry, batch: int, extra=()) -> float:
    """The entry's learning rate scaled to `batch` by the square root of the batch ratio (Adam's usual rule)."""
    _, _, args = training.parse_arguments([*entry.train_arguments(), *extra, "--use_cpu", "true", "--bf16", "false"])
    args.resolve_batch_size()
    return args.learning_rate * (batch / (args.per_device_train_batch_size * args.world_size)) ** 0.5


def measure(
    entry: zoo.ZooEntry, path: str, batch: int | None, steps: int, extra=(), epochs: float | None = None
) -> dict:
    """One row: the entry's command with `--device_data` for `path`, `batch` images per step, `steps` steps; or, with
    `epochs`, that many epochs at the learning rate scaled to `batch`, and the test accuracy it reaches."""
    with tempfile.TemporaryDirectory() as scratch:
        flags = [*entry.train_arguments(), "--eval_strategy", "no", "--save_strategy", "no", "--plots", "false",
                 "--report_to", "none", "--disable_tqdm", "true", "--output_dir", scratch,
                 "--device_data", PATHS[path]]  # fmt: skip
        if epochs is None:
            flags += ["--max_steps", str(steps), "--max_eval_samples", "64", "--logging_steps", str(steps)]
        else:
            flags += ["--num_train_epochs", str(epochs)]
        if batch is not None:
            flags += ["--global_batch_size", str(batch)]
            if epochs is not None:
                flags += ["--learning_rate", f"{scaled_learning_rate(entry, batch, extra):.3g}"]
        metrics = training.main([*flags, *extra])
    settings = metrics["settings"]
    return {
        "setting": entry.setting,
        "mixer": entry.mixer,
        "entry": entry.name,
        "path": path,
        "batch": settings["per_device_train_batch_size"] * settings["world_size"],
        "steps": steps,
        "images_per_second": metrics.get("steady_train_images_per_second"),
        "device": metrics["device"],
        "epochs": epochs,
        "learning_rate": settings["learning_rate"],
        "test_accuracy": metrics["test_accuracy"] if epochs is not None else None,
    }


def table(rows: list[dict]) -> str:
    """Markdown: one line per (setting, mixer, batch), the paths side by side, and their ratio."""
    paths = list(dict.fromkeys(row["path"] for row in rows))
    lines = ["| setting | mixer | batch | " + " | ".join(f"{p} images/s" for p in paths)
             + (" | device / per-image |" if len(paths) == 2 else " |"),
             "|---|---|---|" + "---|" * (len(paths) + (len(paths) == 2))]  # fmt: skip
    keys = list(dict.fromkeys((row["setting"], row["mixer"], row["batch"]) for row in rows))
    for key in keys:
        speeds = {
            row["path"]: row["images_per_second"]
            for row in rows
            if (row["setting"], row["mixer"], row["batch"]) == key
        }
        cells = [f"{speeds[p]:,.0f}" if speeds.get(p) else "—" for p in paths]
        if len(paths) == 2:
            ratio = speeds.get("device") and speeds.get("per-image") and speeds["device"] / speeds["per-image"]
            cells.append(f"{ratio:.2f}" if ratio else "—")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    trained = [row for row in rows if row.get("test_accuracy") is not None]
    if trained:
        lines += ["", "| setting | mixer | batch | learning rate | epochs | test top-1 % | data path |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['setting']} | {r['mixer']} | {r['batch']} | {r['learning_rate']:.3g} | {r['epochs']:g} "
                  f"| {100 * r['test_accuracy']:.2f} | {r['path']} |" for r in trained]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="ttt-hf throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", action="append", required=True, choices=list(zoo.SETTINGS))
    parser.add_argument("--mixers", help="comma-separated mixer suffixes (default: every mixer of the setting)")
    parser.add_argument("--paths", default="per-image,device", help="per-image, device, or both (default)")
    parser.add_argument("--batches", default=None, help="comma-separated global batch sizes (default: the entry's)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epochs", type=float, default=None,
                        help="train this many epochs per batch size instead, the entry's learning rate scaled by "
                        "sqrt(batch / its batch), and report the test accuracy too")  # fmt: skip
    parser.add_argument("--csv", default=None, help="also write the rows here")
    args, extra = parser.parse_known_args(argv)
    paths = args.paths.split(",")
    if set(paths) - set(PATHS):
        parser.error(f"--paths takes {', '.join(PATHS)}")
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [None]
    wanted = args.mixers.split(",") if args.mixers else None
    entries, seen = [], set()
    for entry in zoo.ZOO.values():  # one seed per mixer: the seed does not change the speed
        if (
            entry.setting in args.setting
            and (wanted is None or entry.mixer in wanted)
            and (entry.setting, entry.mixer) not in seen
        ):
            seen.add((entry.setting, entry.mixer))
            entries.append(entry)
    rows = []
    for entry in entries:
        for batch in batches:
            for path in paths:  # the paths alternate, so drift in the machine's speed hits both alike
                rows.append(measure(entry, path, batch, args.steps, extra, args.epochs))
                speed = rows[-1]["images_per_second"]
                shown = "no steady step (give --steps 3 or more)" if speed is None else f"{speed:,.0f} images/s"
                print(f"{entry.name} {path} batch {rows[-1]['batch']}: {shown}", flush=True)
    machine = machine_description("cuda" if torch.cuda.is_available() else "cpu")
    print(f"\n{table(rows)}\n\nmachine: {machine}; device of the runs: {rows[0]['device']}")
    if args.csv:
        write_csv(rows, args.csv)
    return rows


__all__ = ["measure", "scaled_learning_rate", "table"]
