"""The `ttt-hf` command: `ttt-hf train | evaluate | publish | benchmark | precision | quickstart | meta-train | zoo
| throughput | demo | presets | recipes`.

Each subcommand's flags: `ttt-hf <command> --help`. A user error (a bad flag
value, a missing file, an unknown dataset) prints one message, not a traceback; `ttt-hf --debug <command>` or
TTT_HF_DEBUG=1 shows the traceback too.
"""

import importlib
import os
import sys
import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str | None  # the module whose main(argv) runs the command; None: a listing printed here
    help: str


# The one map of commands to modules: the CLI, the recorded command lines (provenance), the README and scripts/ use it.
COMMANDS = {
    "train": Command("ttt_hf.vision.training", "train or fine-tune a TTT-ViT with Trainer"),
    "evaluate": Command(
        "ttt_hf.vision.evaluation", "accuracy, top-5, images/s and a confusion matrix of a checkpoint"
    ),
    "publish": Command("ttt_hf.hub.publish", "upload a run to the Hub in one commit: weights, code, processor, card"),
    "benchmark": Command("ttt_hf.bench.benchmark", "time and memory of every mixer and model across sequence lengths"),
    "precision": Command("ttt_hf.bench.precision", "float32 and bfloat16-autocast errors of every mixer vs float64"),
    "quickstart": Command("ttt_hf.vision.quickstart", "train, evaluate, reload and classify a bundled dataset (CPU)"),
    "meta-train": Command("ttt_hf.gpicl.meta_training", "meta-train a general-purpose in-context learner (GPICL)"),
    "throughput": Command(
        "ttt_hf.bench.throughput", "training images/s of the zoo's settings per data path and batch"
    ),
    "zoo": Command(
        "ttt_hf.zoo", "the model zoo: list, train, store, publish, table (one registry of every zoo model)"
    ),
    "demo": Command(
        "ttt_hf.demo.app", "a Gradio app: classify with the zoo's models, watch a learner learn in context"
    ),
    "presets": Command(None, "list the named model configurations"),
    "recipes": Command(None, "list the training recipes and every setting they fix"),
}
# What a user can cause and fix: a bad value, a missing file or package, no network — raised where inputs are
# checked: in ttt_hf itself or the Hub and dataset loaders. The same types raised anywhere else (torch, a DataLoader
# worker, hours into training) are bugs or environment failures and keep their traceback.
USER_ERRORS = (ValueError, OSError, ImportError)
_INPUT_CHECKERS = ("huggingface_hub", "transformers/utils/hub.py", "transformers/dynamic_module_utils.py",
                   "datasets/load.py", "datasets/data_files.py", "argparse.py")  # fmt: skip


def is_user_error(error: BaseException) -> bool:
    """A user error: one of USER_ERRORS raised (innermost frame) in code that checks the user's inputs."""
    if not isinstance(error, USER_ERRORS):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    where = frames[-1].filename.replace(os.sep, "/") if frames else ""
    from . import modeling  # its folder is ttt_hf/modeling once installed, modeling/ in an editable checkout

    ours = [os.path.dirname(os.path.abspath(path)).replace(os.sep, "/") for path in (__file__, modeling.__file__)]
    return any(where.startswith(folder) for folder in ours) or any(f"/{name}" in where for name in _INPUT_CHECKERS)


def usage() -> str:
    lines = ["usage: ttt-hf [--debug] <command> [flags]   (ttt-hf <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:11s} {command.help}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def _list(command: str) -> None:
    if command == "presets":
        from .modeling import TTTViTConfig

        print("\n".join(["auto", *TTTViTConfig.presets()]))
    else:
        from .vision.recipes import RECIPES

        for name, recipe in RECIPES.items():
            settings = ", ".join(
                f"{flag}={'from the data size' if value is None else value}"
                for flag, value in recipe.settings().items()
            )
            print(f"{name}: {recipe.description}\n    {settings}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("TTT_HF_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ttt-hf: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if COMMANDS[command].module is None:
        _list(command)
        return 0
    sys.argv = [f"ttt-hf {command}", *rest]  # so --help shows the subcommand's name
    try:
        importlib.import_module(COMMANDS[command].module).main(rest)
    except USER_ERRORS as error:
        if debug or not is_user_error(error):
            raise
        print(f"ttt-hf {command}: error: {error}\n(ttt-hf --debug {command} ... shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ttt-hf {command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
