"""The model zoo: every model ttt-hf trains and publishes, written once (`ZOO`), and `ttt-hf zoo ...`.

An entry is a `ttt-hf train` command (a TTT-ViT classifier: preset or "auto", config overrides, dataset, recipe,
extra flags, seed) or a `ttt-hf meta-train` command (a GPICL in-context learner: backbone, config overrides,
dataset, flags, seed); its trained model lives in `model_cards/<name>/` as a ready-to-push Hub folder without the
model code, which `ttt_hf.hub` adds from the installed package at publish time. The mixers are `MIXER_PRESETS`'s.

    ttt-hf zoo list                               the entries, their commands, and which are trained
    ttt-hf zoo train NAME [--output_dir DIR] [flags]   run the entry's `ttt-hf train`/`meta-train` (+ flags)
    ttt-hf zoo store NAME RUN_DIR                 keep a finished run as model_cards/NAME/ (with its test-slice score)
    ttt-hf zoo publish --org ORG [--tag T] [--collection TITLE] [--dry-run DIR] [NAME ...]   publish to ORG/NAME
    ttt-hf zoo train --setting S|--tier T [--parallel N]   every entry of a setting or tier, N processes at once
    ttt-hf zoo pack OUT [--root DIR]              finished runs into at most 8 archives of 16 MiB (a device call)
    ttt-hf zoo unpack ARCHIVE... [--root DIR]     the runs again, ready for `zoo store`
    ttt-hf zoo table [--learners]                 the README's results tables (classifiers, or in-context learners)
    ttt-hf zoo cards                              rewrite the stored cards from their files (after a template change)
    ttt-hf zoo mixers                             the mixer presets: `suffix field=value,...` (for shell scripts)
"""

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .modeling.configuration_ttt_vit import MIXER_PRESETS
from .recipes import DEFAULT_RECIPE

MODEL_CARDS = Path(__file__).resolve().parents[1] / "model_cards"  # the repository's folder (editable install)
MAX_FOLDER_BYTES = 5 * 1024 * 1024  # a zoo folder lives in git
SLICE_SIZE = 200  # the test slice: the first images of the test split (all of it when smaller: digits has 180)
RESULTS_FILE = "all_results.json"
DEFAULT_SEED = 42  # TrainingArguments' default: `ttt-hf train` without --seed


@dataclass(frozen=True)
class ZooEntry:
    name: str
    dataset: str
    preset: str = "auto"
    overrides: str | None = None  # --config_overrides
    recipe: str = DEFAULT_RECIPE
    flags: tuple[str, ...] = ()  # further `ttt-hf train` flags
    seed: int = DEFAULT_SEED
    setting: str = ""  # what the results table groups by
    mixer: str = "mlp"  # the MIXER_PRESETS suffix (a classifier) or the GPICL backbone (an in-context learner)
    plan: str = "CPU, minutes"  # where and how long it is meant to train
    trainer: str = "train"  # `ttt-hf train` (a TTT-ViT classifier) or `ttt-hf meta-train` (a GPICL learner)
    tier: str = "CPU"  # where it is meant to train: "CPU" or "GPU"

    @property
    def in_context(self) -> bool:
        return self.trainer == "meta-train"

    @property
    def description(self) -> str:
        """The model in words: the paper's name of the mixer, or the GPICL backbone."""
        return f"GPICL, {self.mixer} backbone" if self.in_context else MIXER_PRESETS[self.mixer].paper_name

    def train_arguments(self) -> list[str]:
        """The `ttt-hf train` / `ttt-hf meta-train` flags of this entry (defaults left out, so the recorded command
        stays short)."""
        arguments = ["--dataset", self.dataset] + (["--backbone", self.mixer] if self.in_context else [])
        if self.preset != "auto":
            arguments += ["--preset", self.preset]
        if self.overrides:
            arguments += ["--config_overrides", self.overrides]
        if self.recipe != DEFAULT_RECIPE:
            arguments += ["--recipe", self.recipe]
        arguments += list(self.flags)
        if self.seed != DEFAULT_SEED:
            arguments += ["--seed", str(self.seed)]
        return arguments

    def command(self) -> str:
        import shlex

        return shlex.join(["ttt-hf", self.trainer, *self.train_arguments()])


@dataclass(frozen=True)
class ZooSetting:
    """One comparison of the zoo: every mixer in `mixers` trained on one dataset with one model size, recipe and
    budget (what `ttt-hf zoo train --setting NAME` runs), on the device of its tier."""

    name: str  # the entries are ttt-vit-<mixer suffix>-<name>[-seed<k>]
    tier: str  # "CPU" (trained on 2 CPU cores) or "GPU" (one device call: scripts/train_zoo_gpu.sh)
    dataset: str
    description: str  # the input in words, for the results table
    preset: str  # the preset prefix ("auto" keeps the trainer's auto model, with the mixer as an override)
    overrides: str
    flags: tuple[str, ...]
    mixers: tuple[str, ...]
    seeds: dict  # mixer suffix -> seeds (the others: seed 0)
    plan: str

    def entries(self) -> list[ZooEntry]:
        entries = []
        for suffix in self.mixers:
            mixer = ",".join(f"{key}={value}" for key, value in MIXER_PRESETS[suffix].fields.items())
            for seed in self.seeds.get(suffix, (0,)):
                entries.append(
                    ZooEntry(
                        f"ttt-vit-{suffix}-{self.name}" + (f"-seed{seed}" if seed else ""),
                        self.dataset,
                        preset="auto" if self.preset == "auto" else f"{self.preset}-{suffix}",
                        overrides=",".join(filter(None, [self.overrides, mixer if self.preset == "auto" else ""])),
                        flags=self.flags,
                        seed=seed,
                        setting=self.name,
                        mixer=suffix,
                        plan=self.plan,
                        tier=self.tier,
                    )
                )
        return entries


ALL_MIXERS = tuple(MIXER_PRESETS)
PATCH_MIXERS = tuple(s for s in MIXER_PRESETS if s != "mlp-shuffled4")  # shuffled batching is the pixel variant
TWO_SEEDS = {"mlp": (0, 1), "linattn": (0, 1)}  # the paper's key comparison gets two seeds; the others one
# Fashion-MNIST, all 60,000 training images (54,000 train / 6,000 validation; test = the official 10,000).
# GPU tier: one small ViT for every mixer, one recipe and budget per setting. Patches: 28x28 input, 4x4 patches
# (49 tokens), sin-cos positions. Pixels: 14x14 input (196 tokens) and 28x28 (784 tokens), learned positions.
FMNIST_MODEL = "hidden_size=96,num_hidden_layers=6,num_attention_heads=3,intermediate_size=384"
# Batch 512 (lr 3e-3, the default recipe's 2e-3 at batch 64 scaled by less than sqrt) and 20 epochs: sized so that
# the 19 runs fit one device call at the throughput targets; bf16 autocast and torch.compile.
FMNIST_FLAGS = ("--num_train_epochs", "20", "--global_batch_size", "512", "--learning_rate", "3e-3",
                "--crop_min_scale", "0.5", "--horizontal_flip", "true", "--bf16", "true",
                "--torch_compile", "true")  # fmt: skip
# CPU tier: the trainer's auto model (4 layers of width 96; 7x7 patches of 28x28 images, 16 tokens) for every mixer,
# 12 epochs with flips; and digits as pixels (8x8, 64 tokens), 30 epochs of its 1,437 training images.
CPU_FLAGS = ("--num_train_epochs", "12", "--horizontal_flip", "true")
AUTO_SIZE = "hidden_size=96,num_hidden_layers=4,num_attention_heads=3,intermediate_size=384"
SETTINGS = {
    setting.name: setting
    for setting in (
        ZooSetting("fmnist-cpu", "CPU", "fashion-mnist", "Fashion-MNIST, 7x7 patches (16 tokens)", "auto", "",
                   CPU_FLAGS, PATCH_MIXERS, TWO_SEEDS, "CPU, 25 min"),
        ZooSetting("digits-pixel", "CPU", "digits", "digits as pixels (8x8, 64 tokens)", "ttt-vit-tiny-pixel",
                   AUTO_SIZE, ("--num_train_epochs", "30"), ALL_MIXERS, {}, "CPU, 10 min"),
        ZooSetting("fmnist-patch", "GPU", "fashion-mnist", "Fashion-MNIST, 4x4 patches (49 tokens)", "ttt-vit-tiny16",
                   f"{FMNIST_MODEL},patch_size=4", FMNIST_FLAGS + ("--image_size", "28"), PATCH_MIXERS, TWO_SEEDS,
                   "GPU"),
        ZooSetting("fmnist-pixel", "GPU", "fashion-mnist", "Fashion-MNIST as 14x14 pixels (196 tokens)",
                   "ttt-vit-tiny-pixel", FMNIST_MODEL, FMNIST_FLAGS + ("--image_size", "14"), ALL_MIXERS, TWO_SEEDS,
                   "GPU"),
        ZooSetting("fmnist-pixel28", "GPU", "fashion-mnist", "Fashion-MNIST as 28x28 pixels (784 tokens)",
                   "ttt-vit-tiny-pixel", FMNIST_MODEL, FMNIST_FLAGS + ("--image_size", "28"),
                   ("mlp", "mlp-shuffled4", "linattn", "attn"), {}, "GPU, if the measured throughput fits"),
    )
}  # fmt: skip

# In-context learners (GPICL): the matched-parameter comparison (about 1 M parameters each), meta-trained on fresh
# tasks of mnist-5k with `ttt-hf meta-train`'s defaults, bursty sequences first (10 base examples each until step
# 400) and the causal convolutions that let them leave the plateau (docs/gpicl.md); TTT-MLP's 600 steps are what its
# 0.15 steps/s on one core fit in a session.
GPICL_FLAGS = ("--distinct_examples", "10:400", "--eval_steps", "50")
GPICL_BACKBONES = {  # backbone -> (config overrides, steps, plan)
    "ttt_linear": ("ttt_conv_size=2", 1000, "CPU, 35 min"),
    "transformer": ("ttt_conv_size=2", 1000, "CPU, 30 min"),
    "ttt_mlp": ("ttt_conv_size=2", 600, "CPU, 70 min"),
}


def _zoo() -> dict[str, ZooEntry]:
    entries = [
        ZooEntry("ttt-vit-mlp-digits", "digits", setting="digits"),
        ZooEntry("ttt-vit-mlp-mnist-5k", "mnist-5k", setting="mnist-5k"),
        # the trainer's defaults on Fashion-MNIST (7x7 patches, 16 tokens, 10 epochs): the base of the fine-tuning
        # example; the comparison of the mixers is the fmnist-patch / fmnist-pixel entries below
        ZooEntry("ttt-vit-mlp-fashion-mnist", "fashion-mnist", setting="fashion-mnist auto", plan="CPU, 25 min"),
    ]
    for setting in SETTINGS.values():
        entries += setting.entries()
    for backbone, (overrides, steps, plan) in GPICL_BACKBONES.items():
        entries.append(
            ZooEntry(
                f"gpicl-{backbone.replace('_', '-')}-mnist-5k",
                "mnist-5k",
                overrides=overrides,
                flags=GPICL_FLAGS + ("--max_steps", str(steps)),
                setting="in-context, mnist-5k tasks",
                mixer=backbone,
                plan=plan,
                trainer="meta-train",
            )
        )
    return {entry.name: entry for entry in entries}


ZOO = _zoo()


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; `ttt-hf zoo list` lists them: {', '.join(ZOO)}.")
    return ZOO[name]


def folder(name: str, model_cards=None) -> Path:
    return Path(model_cards or MODEL_CARDS) / name


def is_trained(name: str, model_cards=None) -> bool:
    return (folder(name, model_cards) / RESULTS_FILE).is_file()


# ------------------------------------------------------------------------------------------ the test slice


def fixed_test_slice(arguments: dict):
    """(images, labels, description) of the fixed test slice of a run, from its training_args.json: the first
    SLICE_SIZE images of the test split that `ttt-hf train` drew (same dataset, fractions and split seed)."""
    from .data import load_image_dataset

    data = arguments.get("data") or {}
    split = load_image_dataset(
        data["dataset"],
        data_dir=data.get("data_dir"),
        validation_fraction=data.get("validation_fraction", 0.1),
        seed=data.get("split_seed", 0),
        max_train_samples=data.get("max_train_samples"),
        max_eval_samples=data.get("max_eval_samples"),
        check_images=False,
    )["test"]
    rows = split.select(range(min(SLICE_SIZE, len(split))))
    description = (
        f"the first {len(rows)} of the {len(split)} images of the test split of "
        f"load_image_dataset({data['dataset']!r}, validation_fraction={data.get('validation_fraction', 0.1)}, "
        f"seed={data.get('split_seed', 0)})"
    )
    return list(rows["image"]), list(rows["label"]), description


def check_run_is_the_entry(run: Path, entry: ZooEntry) -> None:
    """ValueError unless `run` was made by the entry's kind of command, on its dataset, with its config overrides
    (and, for a learner, its backbone)."""
    from .training import parse_overrides

    config = json.loads((run / "config.json").read_text())
    if (config.get("model_type") == "gpicl") != entry.in_context:
        raise ValueError(f"{run} is not a `ttt-hf {entry.trainer}` run, which zoo entry {entry.name} needs.")
    if entry.in_context:
        meta = json.loads((run / RESULTS_FILE).read_text())["meta_arguments"]
        found, wanted = (config["backbone"], meta["dataset"]), (entry.mixer, entry.dataset)
    else:
        found = json.loads((run / "training_args.json").read_text())["data"]["dataset"]
        wanted = entry.dataset
    overrides = parse_overrides(entry.overrides)
    found, wanted = (found, {k: config.get(k) for k in overrides}), (wanted, overrides)
    if found != wanted:
        raise ValueError(f"{run} was trained as {found}; zoo entry {entry.name} is {wanted}.")


def in_context_slice(folder) -> tuple[float, int, str]:
    """(accuracy, sequences, description) of an in-context learner's test slice: its run's final evaluation on
    unseen tasks of the meta-training dataset, recomputed from the weights in `folder`. ValueError if the weights do
    not reproduce the recorded accuracy (to one sequence in a thousand: a near tie may flip across machines)."""
    from .meta_training import reproduce_final_accuracy

    task_set, found, recorded = reproduce_final_accuracy(folder)
    size = json.loads((Path(folder) / RESULTS_FILE).read_text())["meta_arguments"]["final_eval_sequences"]
    if abs(found - recorded) > 1e-3 + 1e-9:
        raise ValueError(f"{folder}: the weights give {found:.4f} on {task_set}, all_results.json records {recorded}.")
    return found, size, f"the final evaluation's {size} sequences of {task_set} (test split), after the last example"


def predictions(model_dir, images, batch_size: int = 50) -> list[int]:
    """Top-1 class indices of `images` by the model and image processor saved in `model_dir` (Auto classes)."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    found = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = processor(images[start : start + batch_size], return_tensors="pt")["pixel_values"]
            found += model(pixel_values=pixels).logits.argmax(-1).tolist()
    return found


def accuracy(found: list[int], labels: list[int]) -> float:
    return sum(int(a == b) for a, b in zip(found, labels, strict=True)) / len(labels)


# ------------------------------------------------------------------------------------------------ commands


def store(name: str, run_dir, model_cards=None, org: str | None = None) -> Path:
    """Copy a finished run into model_cards/<name>/: the files a publish uploads except the model code, with
    all_results.json extended by the test slice's accuracy, and README.md, the card (`ttt_hf.model_card`)."""
    from .hub import CARD_FILE, repo_files

    get_entry(name)
    run, target = Path(run_dir), folder(name, model_cards)
    repo_id = f"{org}/{name}" if org else name
    files = repo_files(run, repo_id, provenance=False)  # checks the run is complete and its card valid
    check_run_is_the_entry(run, get_entry(name))
    if get_entry(name).in_context:
        slice_accuracy, size, description = in_context_slice(run)
    else:
        images, labels, description = fixed_test_slice(json.loads((run / "training_args.json").read_text()))
        slice_accuracy, size = accuracy(predictions(run, images), labels), len(labels)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path_in_repo, source in files.items():
        if path_in_repo.endswith(".py") or path_in_repo == CARD_FILE:
            continue
        (target / path_in_repo).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / path_in_repo)
    results = json.loads((target / RESULTS_FILE).read_text())
    results.update(test_slice=description, test_slice_size=size, test_slice_accuracy=slice_accuracy)
    if not get_entry(name).in_context:
        results["sample"] = sample_of(target, images[0], labels[0])
    (target / RESULTS_FILE).write_text(json.dumps(results, indent=4, sort_keys=True) + "\n")
    (target / CARD_FILE).write_bytes(repo_files(target, repo_id, provenance=False)[CARD_FILE])
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    if size > MAX_FOLDER_BYTES:
        raise ValueError(f"{target} holds {size / 2**20:.1f} MB, over the zoo's 5 MB: use a smaller model.")
    return target


def sample_of(target: Path, image, label: int) -> dict:
    """Write the first image of the test slice as the folder's sample image (`write_sample`), with its record."""
    from .evaluation import write_sample

    names = json.loads((target / "config.json").read_text())["id2label"]
    return write_sample(target, image, names[str(label)])


def refresh_cards(model_cards=None, names=()) -> list[Path]:
    """Rewrite the card of every stored entry (or of `names`) from its files (after a change to the card's template
    or to its results), adding the sample image of classifiers stored before it existed. The weights and measured
    numbers stay as they are."""
    from huggingface_hub import ModelCard

    from .hub import CARD_FILE, repo_files

    refreshed = []
    for name in ZOO:
        if not is_trained(name, model_cards) or (names and name not in names):
            continue
        target = folder(name, model_cards)
        results = json.loads((target / RESULTS_FILE).read_text())
        if not get_entry(name).in_context and "sample" not in results:
            images, labels, _ = fixed_test_slice(json.loads((target / "training_args.json").read_text()))
            results["sample"] = sample_of(target, images[0], labels[0])
            (target / RESULTS_FILE).write_text(json.dumps(results, indent=4, sort_keys=True) + "\n")
        card = ModelCard.load(target / CARD_FILE)
        repo_id = usage_repo_id(card.text) or name
        (target / CARD_FILE).write_bytes(repo_files(target, repo_id, provenance=False)[CARD_FILE])
        refreshed.append(target)
    return refreshed


def usage_repo_id(card_text: str) -> str | None:
    """The repo id a card's usage example loads (`model="..."`), or None."""
    import re

    match = re.search(r'model="([^"]+)"', card_text)
    return match.group(1) if match else None


def train_many(names: list[str], root, parallel: int = 1, extra=(), poll: float = 2.0) -> dict[str, int]:
    """Train zoo entries `parallel` at a time (0: all at once), one `ttt-hf zoo train NAME` process each, writing
    ordinary run folders ROOT/NAME (and their output to ROOT/NAME.log); entries whose ROOT/NAME/all_results.json
    exists are done and skipped. The processes share the machine's cores (OMP_NUM_THREADS and torch.compile's
    workers), and on a GPU machine the device. Interrupted, it stops the runs still going. Returns name -> exit
    code, in the order given."""
    import os
    import subprocess
    import time

    import torch

    if parallel < 0:
        raise ValueError(f"--parallel must be a number of processes (0: all at once), got {parallel}.")
    if any(flag.split("=")[0] in ("--output_dir", "--output-dir") for flag in extra):
        raise ValueError("Every run writes ROOT/NAME: give the root as `zoo train --output_dir`, before other flags.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pending = [name for name in names if not (root / name / RESULTS_FILE).is_file()]
    for name in names:
        if name not in pending:
            print(f"{name}: done already ({root / name / RESULTS_FILE})", flush=True)
    parallel = min(parallel or len(pending), len(pending)) or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // parallel))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "TORCHINDUCTOR_COMPILE_THREADS": threads}
    if torch.cuda.is_available():  # a user's own thread settings win where the GPU does the work
        env = {
            **env,
            **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS") if k in os.environ},
        }
    running, codes, start = {}, {}, time.time()
    try:
        while pending or running:
            while pending and len(running) < parallel:
                name = pending.pop(0)
                command = [sys.executable, "-m", "ttt_hf.cli", "zoo", "train", name, "--output_dir", str(root / name),
                           *extra]  # fmt: skip
                log = open(root / f"{name}.log", "w")  # noqa: SIM115  (closed when the run ends)
                running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
                print(f"[{time.time() - start:7.0f} s] started {name} (log: {root / name}.log)", flush=True)
            time.sleep(poll)
            for name, (process, log) in list(running.items()):
                if process.poll() is not None:
                    log.close()
                    codes[name] = process.returncode
                    del running[name]
                    state = "finished" if process.returncode == 0 else f"FAILED (exit code {process.returncode})"
                    print(f"[{time.time() - start:7.0f} s] {state}: {name}", flush=True)
    finally:  # interrupted (Ctrl-C, a timeout): stop the runs still going, and wait for them
        for process, _ in running.values():
            process.terminate()
        for name, (process, log) in running.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
            print(f"[{time.time() - start:7.0f} s] stopped: {name}", flush=True)
    return {name: codes.get(name, 0) for name in names}


MAX_ARCHIVES, MAX_ARCHIVE_BYTES = 8, 16 * 2**20  # what a device call brings back: at most 8 files of 16 MiB


def _run_files(run: Path) -> list[Path]:
    """The files of a finished run that `zoo store` and a reader need: all but its checkpoints and pickles (Trainer's
    training_args.bin; training_args.json holds the arguments)."""
    files = (p for p in run.rglob("*") if p.is_file() and p.suffix not in (".bin", ".pt"))
    return sorted(p for p in files if not p.relative_to(run).parts[0].startswith("checkpoint-"))


def _tar_gz(path: Path, runs: list[Path]) -> int:
    import tarfile

    with tarfile.open(path, "w:gz", compresslevel=9) as archive:
        for run in runs:
            for file in _run_files(run):
                archive.add(file, arcname=str(Path(run.name) / file.relative_to(run)), recursive=False)
            log = run.parent / f"{run.name}.log"
            if log.is_file():
                archive.add(log, arcname=f"{run.name}/{log.name}")
    return path.stat().st_size


def pack(root, out, max_files: int = MAX_ARCHIVES, max_bytes: int = MAX_ARCHIVE_BYTES) -> list[Path]:
    """Pack every finished run under `root` (a folder with all_results.json; checkpoints left out, the run's log kept)
    into at most `max_files` archives OUT/zoo-runs-<k>.tar.gz of at most `max_bytes` each, whole runs per archive
    (first fit, largest first). ValueError, before writing anything, if they cannot fit."""
    import tempfile

    root, out = Path(root), Path(out)
    runs = sorted(p.parent for p in root.glob(f"*/{RESULTS_FILE}"))
    if not runs:
        raise ValueError(f"No finished run (a folder with {RESULTS_FILE}) under {root}.")
    with tempfile.TemporaryDirectory() as scratch:  # each run's compressed size, alone
        sizes = {run: _tar_gz(Path(scratch) / f"{run.name}.tar.gz", [run]) for run in runs}
    bins: list[list[Path]] = []
    for run in sorted(runs, key=lambda r: -sizes[r]):
        if sizes[run] > max_bytes:
            raise ValueError(f"{run} takes {sizes[run] / 2**20:.1f} MiB compressed, over {max_bytes / 2**20:g} MiB.")
        fitting = next((b for b in bins if sum(sizes[r] for r in b) + sizes[run] <= 0.98 * max_bytes), None)
        if fitting is None:
            bins.append(fitting := [])
        fitting.append(run)
    if len(bins) > max_files:
        total = sum(sizes.values()) / 2**20
        raise ValueError(
            f"{len(runs)} runs take {total:.1f} MiB compressed, {len(bins)} archives of {max_bytes / 2**20:g} MiB: "
            f"more than {max_files}. Pack fewer runs (move some out of {root}) or smaller models."
        )
    out.mkdir(parents=True, exist_ok=True)
    archives = []
    for k, group in enumerate(bins):
        path = out / f"zoo-runs-{k}.tar.gz"
        if _tar_gz(path, sorted(group)) > max_bytes:
            raise ValueError(f"{path} came out over {max_bytes / 2**20:g} MiB; pack with a smaller --max_bytes.")
        archives.append(path)
    return archives


def unpack(archives, root, force: bool = False) -> list[Path]:
    """Extract `pack`'s archives into ROOT/<run>/ (tarfile's "data" filter: no absolute paths, links out or devices);
    a run folder that exists already is refused unless `force`. Returns the run folders."""
    import tarfile

    root = Path(root)
    runs = []
    for path in archives:
        with tarfile.open(path, "r:gz") as archive:
            members = archive.getmembers()
            names = sorted({Path(m.name).parts[0] for m in members})
            clash = [name for name in names if (root / name).exists()]
            if clash and not force:
                raise FileExistsError(f"{path}: {', '.join(clash)} exist(s) in {root}; remove them or pass --force.")
            for name in clash:  # --force: the archive's run replaces the folder
                shutil.rmtree(root / name)
            if not hasattr(tarfile, "data_filter"):
                raise RuntimeError("Unpacking safely needs Python 3.10.12, 3.11.4 or newer (tarfile's data filter).")
            archive.extractall(root, filter="data")
            runs += [root / name for name in names]
    return runs


def publish_zoo(org: str, names=(), dry_run=None, model_cards=None, tag=None, collection=None) -> list:
    """Publish each trained entry (all of them, or `names`) from model_cards/<name>/ to ORG/<name>, each commit
    tagged `tag` if given; with `collection`, gather them into ORG's collection of that title afterwards. With
    `dry_run`, write each into DIR/<name> (and the collection into DIR/collection.json) instead."""
    from .hub import add_to_collection, publish

    names = list(names) or [name for name in ZOO if is_trained(name, model_cards)]
    for name in names:
        get_entry(name)
        if not is_trained(name, model_cards):
            raise FileNotFoundError(f"{name} is not trained: {folder(name, model_cards)} has no {RESULTS_FILE}.")
    published = [
        publish(folder(name, model_cards), f"{org}/{name}", tag=tag,
                dry_run=None if dry_run is None else Path(dry_run) / name)
        for name in names
    ]  # fmt: skip
    if collection is not None:
        repo_ids = [result.repo_id for result in published]
        if dry_run is not None:
            listing = {"title": collection, "namespace": org, "items": repo_ids}
            (Path(dry_run) / "collection.json").write_text(json.dumps(listing, indent=2) + "\n")
        else:
            url = add_to_collection(collection, org, repo_ids, description=COLLECTION_DESCRIPTION)
            print(f"collection {collection!r}: {url}")
    return published


COLLECTION_DESCRIPTION = "TTT-ViT classifiers and GPICL in-context learners trained with ttt-hf, cards with results"


def measure_speed(model_cards=None, batch_size: int = 256, repeats: int = 5, names=()) -> dict[str, float]:
    """Inference images/s of every trained classifier (or of `names`) on this machine (eval mode, no grad, one batch
    of random images at the model's size; median of `repeats` after a warm-up), written into its all_results.json with
    the machine, so that the results table compares models measured on one machine."""
    import torch
    from transformers import AutoModelForImageClassification

    from .measure import machine_description, time_call

    speeds = {}
    for name, entry in ZOO.items():
        if not is_trained(name, model_cards) or entry.in_context or (names and name not in names):
            continue
        target = folder(name, model_cards)
        model = AutoModelForImageClassification.from_pretrained(target).eval()
        config = model.config
        pixels = torch.randn(batch_size, config.num_channels, config.image_size, config.image_size)
        with torch.no_grad():
            seconds = time_call(lambda m=model, x=pixels: m(pixel_values=x), "cpu", repeats, warmup=2)
        speeds[name] = batch_size / seconds
        results = json.loads((target / RESULTS_FILE).read_text())
        results.update(inference_images_per_s=speeds[name], inference_batch_size=batch_size,
                       inference_machine=machine_description("cpu"))  # fmt: skip
        (target / RESULTS_FILE).write_text(json.dumps(results, indent=4, sort_keys=True) + "\n")
    refresh_cards(model_cards, names=list(speeds))  # the cards quote the speed
    return speeds


def listing(model_cards=None) -> str:
    lines = []
    for name, entry in ZOO.items():
        if is_trained(name, model_cards):
            results = json.loads((folder(name, model_cards) / RESULTS_FILE).read_text())
            score = "in-context, after the last example" if entry.in_context else "test top-1"
            status = f"trained: model_cards/{name}/, {score} {100 * results['test_slice_accuracy']:.2f} % (slice)"
        else:
            status = f"not trained yet (planned: {entry.plan}; `ttt-hf zoo train {name}`)"
        lines += [f"{name}  [{entry.description}, {entry.dataset}, seed {entry.seed}]",
                  f"    {status}", f"    {entry.command()}"]  # fmt: skip
    return "\n".join(lines)


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def results_table(model_cards=None, learners: bool = False) -> str:
    """A markdown table of every trained classifier (or, with `learners`, in-context learner), from its
    all_results.json and config.json."""
    if learners:
        from .gpicl_report import load_runs, table

        names = [name for name, entry in ZOO.items() if entry.in_context and is_trained(name, model_cards)]
        return table(load_runs([folder(name, model_cards) for name in names]), names=names)
    lines = [
        "| model | setting | mixer (paper's name) | params | tokens | test top-1 % | test top-5 % | test slice % "
        "| inference img/s | epochs | training time | device | paper: ImageNet top-1 of this mixer (rank) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    machines = set()
    tiers = {name: f"{setting.tier}: {setting.description}" for name, setting in SETTINGS.items()}
    for name, entry in ZOO.items():
        if not is_trained(name, model_cards) or entry.in_context:
            continue
        results = json.loads((folder(name, model_cards) / RESULTS_FILE).read_text())
        config = json.loads((folder(name, model_cards) / "config.json").read_text())
        grid = config["image_size"] // config["patch_size"]
        top5 = next((v for k, v in results.items() if k.startswith("test_top") and k.endswith("_accuracy")), None)
        minutes = results.get("train_runtime")
        speed = results.get("inference_images_per_s")
        machines.add(results.get("inference_machine"))
        lines.append(
            f"| `{name}` | {tiers.get(entry.setting, entry.setting)} | {MIXER_PRESETS[entry.mixer].paper_name} "
            f"| {results['num_parameters'] / 1e6:.2f} M | {grid * grid} | {_percent(results['test_accuracy'])} "
            f"| {_percent(top5)} | {_percent(results.get('test_slice_accuracy'))} "
            f"| {'—' if speed is None else f'{speed:,.0f}'} "
            f"| {results.get('epoch', '—'):g} | {'—' if minutes is None else f'{minutes / 60:.1f} min'} "
            f"| {results.get('device', 'not recorded')} | {_paper_rank(config, entry.mixer)} |"
        )
    machines.discard(None)
    if machines:
        lines += [
            "",
            f"Inference images/s: `ttt-hf zoo speed` (batch 256, eager float32) on {', '.join(sorted(machines))}.",
        ]
    summary = setting_summary(model_cards)
    return "\n".join(lines + (["", summary] if summary else []))


@dataclass(frozen=True)
class Trained:
    """What the summary needs of one trained seed."""

    test_accuracy: float
    epochs: float
    cut_short: bool  # stopped by its time budget before its planned epochs


def _trained_seeds(model_cards=None) -> dict[tuple[str, str], list[Trained]]:
    """(setting, mixer) -> every trained seed, for the settings of `SETTINGS`."""
    found: dict[tuple[str, str], list[Trained]] = {}
    for name, entry in ZOO.items():
        if entry.setting in SETTINGS and is_trained(name, model_cards):
            results = json.loads((folder(name, model_cards) / RESULTS_FILE).read_text())
            seed = Trained(
                results["test_accuracy"], results.get("epoch", 0), bool(results.get("stopped_by_time_budget"))
            )
            found.setdefault((entry.setting, entry.mixer), []).append(seed)
    return found


def _mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (0 for one seed), in percent."""
    return 100 * sum(values) / len(values), 50 * (max(values) - min(values))


def compare(setting: str, first: str, second: str, model_cards=None) -> str | None:
    """One sentence: whether mixer `first` beats `second` in `setting` by more than the seeds' spread (a verdict
    only with two seeds or more each, every run at its planned epochs), or None when either is untrained."""
    trained = _trained_seeds(model_cards)
    if (setting, first) not in trained or (setting, second) not in trained:
        return None
    runs = trained[setting, first], trained[setting, second]
    (a, da), (b, db) = (_mean_spread([seed.test_accuracy for seed in seeds]) for seeds in runs)
    names = MIXER_PRESETS[first].paper_name, MIXER_PRESETS[second].paper_name
    facts = f"{names[0]} {a:.2f} ± {da:.2f} % against {names[1]} {b:.2f} ± {db:.2f} % ({len(runs[0])} and " + (
        f"{len(runs[1])} seed(s))"
    )
    if any(seed.cut_short for seeds in runs for seed in seeds):
        verdict = "a run was cut short by its time budget, so no verdict"
    elif min(len(seeds) for seeds in runs) < 2:
        verdict = "one seed of one of them: no spread to compare against, so no verdict"
    elif abs(a - b) > da + db:
        verdict = f"{names[0] if a > b else names[1]} is ahead by more than the seeds' spread"
    else:
        verdict = "a tie within the seeds' spread"
    return f"{SETTINGS[setting].description}: {facts}: {verdict}."


def setting_summary(model_cards=None) -> str:
    """Markdown: per tier and setting, each mixer's test top-1 as mean ± half the range over its seeds, and the
    paper's key comparison (MTTT-MLP against linear attention) in words."""
    trained = _trained_seeds(model_cards)
    if not trained:
        return ""
    lines = ["| tier | setting | mixer (paper's name) | seeds | epochs | test top-1 %, mean ± half-range |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for setting in SETTINGS.values():
        for mixer in setting.mixers:
            if (setting.name, mixer) in trained:
                seeds = trained[setting.name, mixer]
                mean, spread = _mean_spread([seed.test_accuracy for seed in seeds])
                epochs = ", ".join(f"{seed.epochs:g}" + (" (cut short)" if seed.cut_short else "") for seed in seeds)
                lines.append(f"| {setting.tier} | {setting.description} | {MIXER_PRESETS[mixer].paper_name} "
                             f"| {len(seeds)} | {epochs} | {mean:.2f} ± {spread:.2f} |")  # fmt: skip
    sentences = [compare(name, "mlp", "linattn", model_cards) for name in SETTINGS]
    sentences = [sentence for sentence in sentences if sentence]
    return "\n".join(lines + (["", *sentences] if sentences else []))


def _paper_rank(config: dict, mixer: str) -> str:
    """The paper's ImageNet top-1 of this model's mixer in its setting (patches or pixels) and its rank there."""
    from .model_card import PAPER_IMAGENET

    _, rows = PAPER_IMAGENET["pixels" if config.get("patch_size") == 1 else "patches"]
    ranked = [name for name, value in sorted(rows, key=lambda row: -(row[1] or 0)) if value is not None]
    value = dict(rows).get(MIXER_PRESETS[mixer].paper_name)
    if value is None:
        return "—"
    return f"{value} % ({ranked.index(MIXER_PRESETS[mixer].paper_name) + 1} of {len(ranked)})"


def mixers() -> str:
    """`suffix field=value,...` per mixer preset: the --config_overrides of each, for shell scripts."""
    return "\n".join(
        f"{suffix} {','.join(f'{key}={value}' for key, value in preset.fields.items())}"
        for suffix, preset in MIXER_PRESETS.items()
    )


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttt-hf zoo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_cards", "--model-cards", default=None, help=f"zoo folders (default {MODEL_CARDS})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the entries, their commands, and which are trained")
    train = commands.add_parser(
        "train",
        help="run the entry's `ttt-hf train` (or every entry of --setting / --tier); further flags are appended",
    )
    train.add_argument("name", nargs="?")
    train.add_argument("--output_dir", "--output-dir", help="default: outputs/zoo/NAME (with --setting: the root)")
    train.add_argument("--setting", action="append", choices=list(SETTINGS), help="every entry of this setting")
    train.add_argument("--tier", choices=("CPU", "GPU"), help="every entry of every setting of this tier")
    train.add_argument(
        "--parallel", type=int, default=1, help="with --setting/--tier: runs at once, one process each (0: all)"
    )
    stored = commands.add_parser("store", help="keep a finished run as model_cards/NAME/ (no model code)")
    stored.add_argument("name")
    stored.add_argument("run_dir")
    stored.add_argument("--org", help="the namespace the card's usage examples name (default: none)")
    published = commands.add_parser("publish", help="publish trained entries to ORG/NAME")
    published.add_argument("names", nargs="*", metavar="NAME", help="default: every trained entry")
    published.add_argument("--org", required=True)
    published.add_argument("--dry-run", "--dry_run", metavar="DIR", help="write DIR/NAME/ for each; upload nothing")
    published.add_argument("--tag", help="tag every published commit (e.g. v1.0)")
    published.add_argument("--collection", metavar="TITLE", help="gather the published entries into ORG's collection")
    tables = commands.add_parser("table", help="the results table of the trained entries (markdown)")
    tables.add_argument("--learners", action="store_true", help="the in-context learners' table instead")
    speed = commands.add_parser("speed", help="measure trained entries' inference images/s here, into their results")
    speed.add_argument("names", nargs="*", metavar="NAME", help="default: every trained classifier")
    commands.add_parser("cards", help="rewrite every stored entry's card from its files (and add missing samples)")
    packed = commands.add_parser("pack", help="pack finished runs into archives a device call can bring back")
    packed.add_argument("out", help="folder for zoo-runs-<k>.tar.gz")
    packed.add_argument("--root", default="outputs/zoo", help="the runs' parent folder (default outputs/zoo)")
    packed.add_argument("--max_files", "--max-files", type=int, default=MAX_ARCHIVES)
    packed.add_argument("--max_bytes", "--max-bytes", type=int, default=MAX_ARCHIVE_BYTES)
    unpacked = commands.add_parser("unpack", help="extract packed runs into run folders (then `zoo store`)")
    unpacked.add_argument("archives", nargs="+")
    unpacked.add_argument("--root", default="outputs/zoo", help="where the run folders go (default outputs/zoo)")
    unpacked.add_argument("--force", action="store_true", help="replace run folders that exist")
    commands.add_parser("mixers", help="the mixer presets as `suffix field=value,...` lines")
    return parser


def _train_parser_actions():
    parser = argument_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices["train"]._actions


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = []
    if "train" in argv:  # flags from the first one `zoo train` does not know on go to the run(s)
        ours = {option for action in _train_parser_actions() for option in action.option_strings}
        start = argv.index("train") + 1
        unknown = [i for i in range(start, len(argv)) if argv[i].startswith("-") and argv[i].split("=")[0] not in ours]
        first = unknown[0] if unknown else len(argv)
        argv, extra = argv[:first], argv[first:]
    args = argument_parser().parse_args(argv)
    if args.command == "list":
        print(listing(args.model_cards))
    elif args.command == "train" and (args.setting or args.tier):
        if args.name:
            raise ValueError("Give a NAME or --setting/--tier, not both.")
        settings = [name for name, s in SETTINGS.items() if name in (args.setting or ()) or s.tier == args.tier]
        names = [e.name for e in ZOO.values() if e.setting in settings]
        results = train_many(names, args.output_dir or "outputs/zoo", args.parallel, extra)
        failed = [name for name, code in results.items() if code]
        if failed:
            raise SystemExit(
                f"ttt-hf zoo train: {len(failed)} of {len(results)} runs failed (see their .log files): {failed}"
            )
    elif args.command == "train":
        from . import meta_training, training

        if not args.name:
            raise ValueError("Name a zoo entry (`ttt-hf zoo list`), or give --setting or --tier.")
        entry = get_entry(args.name)
        output_dir = args.output_dir or f"outputs/zoo/{entry.name}"
        main_of = meta_training.main if entry.in_context else training.main
        return main_of([*entry.train_arguments(), "--output_dir", output_dir, *extra])
    elif args.command == "store":
        target = store(args.name, args.run_dir, args.model_cards, args.org)
        print(f"stored {args.run_dir} as {target}:\n" + "\n".join(f"  {p.name}" for p in sorted(target.iterdir())))
    elif args.command == "publish":
        for result in publish_zoo(args.org, args.names, args.dry_run, args.model_cards, args.tag, args.collection):
            where = f"dry run in {result.url}" if result.commit is None else f"commit {result.commit}: {result.url}"
            print(f"{result.repo_id}: {len(result.files)} files ({where})")
    elif args.command == "table":
        print(results_table(args.model_cards, args.learners))
    elif args.command == "cards":
        for target in refresh_cards(args.model_cards):
            print(f"rewrote {target / 'README.md'}")
    elif args.command == "speed":
        for name, speed in measure_speed(args.model_cards, names=args.names).items():
            print(f"{name}: {speed:,.0f} images/s")
    elif args.command == "pack":
        for path in pack(args.root, args.out, args.max_files, args.max_bytes):
            print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    elif args.command == "unpack":
        for run in unpack(args.archives, args.root, args.force):
            entry = f"`ttt-hf zoo store {run.name} {run}`" if run.name in ZOO else "(not a zoo entry)"
            print(f"{run} {entry}")
    else:
        print(mixers())


if __name__ == "__main__":
    main()


__all__ = [
    "ZOO",
    "ZooEntry",
    "accuracy",
    "fixed_test_slice",
    "get_entry",
    "measure_speed",
    "predictions",
    "publish_zoo",
    "results_table",
    "store",
]
