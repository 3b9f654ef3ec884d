"""The names of the files a run folder holds, written once: training writes them, the zoo, the cards and publishing
read them."""

import csv
import json
from pathlib import Path

RESULTS_FILE = "all_results.json"  # every measured number of a run (Trainer's save_metrics("all"))
TRAINING_ARGS_FILE = "training_args.json"  # the run's arguments as JSON (no pickle): model, data, training, code
CARD_FILE = "README.md"  # the model card
SAMPLE_IMAGE = "sample.png"  # a test image shipped with a classifier, its prediction recorded in RESULTS_FILE


def write_files(files: dict, directory, what: str):
    """Write `files` (path -> source file or bytes) into `directory`, which must be new or empty (`what` names it
    in the error), and return it as a Path."""
    folder = Path(directory)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{what} {folder} is not empty: give a new or empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    return folder


def recorded_seed(run) -> int:
    """The seed a run folder (or a zoo folder) was trained with, from its TRAINING_ARGS_FILE."""
    return json.loads((Path(run) / TRAINING_ARGS_FILE).read_text())["training"]["seed"]


def write_csv(rows: list[dict], path) -> None:
    """Write `rows` (dicts with the same keys, in column order) as a CSV file with a header, making its folder."""
    if not rows:
        raise ValueError(f"No rows to write to {path}.")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


__all__ = [
    "CARD_FILE",
    "RESULTS_FILE",
    "SAMPLE_IMAGE",
    "TRAINING_ARGS_FILE",
    "recorded_seed",
    "write_csv",
    "write_files",
]
