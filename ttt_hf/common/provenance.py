"""What a run records about how it was made: its exact command line, the device it ran on, and the ttt-hf code
(version and git commit) that made it and that a publish uploads."""

import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch


def mask_tokens(args: list[str]) -> list[str]:
    """`args` with the value of every `--*_token` flag (`--hub_token X`, `--hub_token=X`) replaced by <hidden>."""
    out = list(args)
    for i, arg in enumerate(out):
        flag = arg.split("=", 1)[0]
        if arg.startswith("--") and flag.endswith("_token"):
            if "=" in arg:
                out[i] = f"{flag}=<hidden>"
            elif i + 1 < len(out):
                out[i + 1] = "<hidden>"
    return out


def _launcher(prefix: list[str], command: str = "train") -> list[str] | None:
    """How the process was started, from `sys.orig_argv` minus the run's flags, if it was `command` (`train`,
    `meta-train`) through the CLI, its module or a script."""
    from ..cli import COMMANDS

    module = COMMANDS[command].module
    i = 1  # skip the interpreter and its own options (-u, -X dev, ...)
    while i < len(prefix) and prefix[i].startswith("-") and prefix[i] != "-m":
        i += 2 if prefix[i] in ("-X", "-W") else 1
    target = prefix[i:]
    if target[:2] == ["-m", module] or (target[:1] and target[0].endswith(".py")):
        launcher = ["python", *target]
    elif target[:2] == ["-m", "ttt_hf.cli"] and target[-1] == command:
        launcher = ["python", *target]
    elif target and os.path.basename(target[0]) == "ttt-hf" and target[-1] == command:
        return ["ttt-hf", *target[1:]]
    else:
        return None
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun (or accelerate launch) worker: show the launch
        local, world = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), int(os.environ.get("WORLD_SIZE", 1))
        nodes = [f"--nnodes={world // local}"] if world != local else []
        launcher = ["torchrun", *nodes, f"--nproc_per_node={local}", *launcher[1:]]
    return launcher


def command_line(argv: list[str], command: str = "train") -> str:
    """The command that started this run as it was typed — `ttt-hf train ...`, `python my_script.py ...`,
    `python -m ttt_hf.vision.training ...`, or `torchrun --nproc_per_node=N -m ttt_hf.vision.training ...` for a
    torchrun worker —
    with token values hidden. When `ttt_hf.vision.training.main` was called from Python with a list of its own, the
    equivalent `ttt-hf train ...` command. `command`: the ttt-hf subcommand of the run (`train`, `meta-train`)."""
    process = list(getattr(sys, "orig_argv", None) or [])
    start = len(process) - len(argv)
    launcher = None
    if start > 0 and process[start:] == list(argv):
        launcher = _launcher(process[:start], command)
    return shlex.join([*(launcher or ["ttt-hf", command]), *mask_tokens(argv)])


def device_description(training_args) -> str:
    """'NVIDIA H100 80GB HBM3, torch 2.x' or 'CPU (x86_64, 2 cores), torch 2.x': the device of this process."""
    device = training_args.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = torch.get_num_threads()
        name = f"CPU ({platform.machine()}, {cores} cores" + (f", {threads} thread(s))" if threads < cores else ")")
    else:
        name = device.type
    return f"{name}, torch {torch.__version__}"


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _installed_commit() -> str | None:
    """The commit pip installed ttt-hf from (`pip install git+...` records it in direct_url.json), or None."""
    try:
        direct = metadata.distribution("ttt-hf").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    commit = (json.loads(direct).get("vcs_info") or {}).get("commit_id") if direct else None
    return commit if isinstance(commit, str) and commit else None


def modeling_folder() -> Path:
    """The installed model code (ttt_hf.modeling's folder): what `save_pretrained` copies into a run."""
    from .. import modeling

    return Path(modeling.__file__).resolve().parent


def code_provenance(files=()) -> dict:
    """The ttt-hf code this process runs: `{"ttt_hf_version": "0.1.0", "ttt_hf_commit": <40 hex or None>}`.

    The commit is the git HEAD of the checkout the package is imported from, if `files` (paths of that checkout;
    default: the whole package) are unchanged there; else the commit pip installed from; else None (unknown: a
    modified checkout, or an install that does not say)."""
    from .. import __version__

    package = Path(__file__).resolve().parent
    paths = [str(Path(f).resolve()) for f in files] or [str(package), str(modeling_folder())]
    commit = None
    head = _git(package, "rev-parse", "HEAD")
    tracked = head is not None and head.returncode == 0 and _git(package, "ls-files", "--error-unmatch", "--", *paths)
    if tracked and tracked.returncode == 0:  # a git checkout of ttt-hf (not an install inside some other repo)
        changes = _git(package, "status", "--porcelain", "--", *paths)
        if changes is not None and changes.returncode == 0 and not changes.stdout.strip():
            commit = head.stdout.strip()
    else:
        commit = _installed_commit()
    return {"ttt_hf_version": __version__, "ttt_hf_commit": commit}


__all__ = ["code_provenance", "command_line", "device_description", "mask_tokens", "modeling_folder"]
