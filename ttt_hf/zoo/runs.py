"""Training many runs at once (zoo entries, or any `ttt-hf` commands such as the GPICL grid; one process each) and
carrying them back from a device call: pack into at most 8 archives of 16 MiB, unpack again."""

import shutil
from pathlib import Path

from ..common.parallel import run_many
from ..common.run_files import RESULTS_FILE


def train_many(names: list[str], root, parallel: int = 1, extra=(), poll: float = 2.0) -> dict[str, int]:
    """Train zoo entries `parallel` at a time (0: all at once), one `ttt-hf zoo train NAME` process each, writing
    ordinary run folders ROOT/NAME (`run_many`). Returns name -> exit code, in the order given."""
    if any(flag.split("=")[0] in ("--output_dir", "--output-dir") for flag in extra):
        raise ValueError("Every run writes ROOT/NAME: give the root as `zoo train --output_dir`, before other flags.")
    return run_many({name: ["zoo", "train", name, *extra] for name in names}, root, parallel, poll)


MAX_ARCHIVES, MAX_ARCHIVE_BYTES = 8, 16 * 2**20  # what a device call brings back: at most 8 files of 16 MiB


def _run_files(run: Path, weights: bool = True) -> list[Path]:
    """The files of a finished run that `zoo store` and a reader need: all but its checkpoints and pickles (Trainer's
    training_args.bin; training_args.json holds the arguments), and, without `weights`, its *.safetensors."""
    left_out = (".bin", ".pt") if weights else (".bin", ".pt", ".safetensors")
    files = (p for p in run.rglob("*") if p.is_file() and p.suffix not in left_out)
    return sorted(p for p in files if not p.relative_to(run).parts[0].startswith("checkpoint-"))


def _tar_gz(path: Path, runs: list[Path], weights: bool = True) -> int:
    import tarfile

    with tarfile.open(path, "w:gz", compresslevel=9) as archive:
        for run in runs:
            for file in _run_files(run, weights):
                archive.add(file, arcname=str(Path(run.name) / file.relative_to(run)), recursive=False)
            log = run.parent / f"{run.name}.log"
            if log.is_file():
                archive.add(log, arcname=f"{run.name}/{log.name}")
    return path.stat().st_size


def pack(root, out, max_files: int = MAX_ARCHIVES, max_bytes: int = MAX_ARCHIVE_BYTES, weights=True) -> list[Path]:
    """Pack every finished run under `root` (a folder with all_results.json; checkpoints left out, the run's log kept,
    the weights too unless `weights` is False) into at most `max_files` archives OUT/zoo-runs-<k>.tar.gz of at most
    `max_bytes` each, whole runs per archive (first fit, largest first). ValueError, before writing, if they cannot
    fit."""
    import tempfile

    root, out = Path(root), Path(out)
    runs = sorted(p.parent for p in root.glob(f"*/{RESULTS_FILE}"))
    if not runs:
        raise ValueError(f"No finished run (a folder with {RESULTS_FILE}) under {root}.")
    with tempfile.TemporaryDirectory() as scratch:  # each run's compressed size, alone
        sizes = {run: _tar_gz(Path(scratch) / f"{run.name}.tar.gz", [run], weights) for run in runs}
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
        if _tar_gz(path, sorted(group), weights) > max_bytes:
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
