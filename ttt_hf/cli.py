"""The `ttt-hf` command: `ttt-hf train | evaluate | benchmark | precision | quickstart | presets`.

Each subcommand takes the same flags as its script in scripts/ (`ttt-hf train --help`)."""

import importlib
import sys

COMMANDS = {
    "train": ("ttt_hf.training", "train or fine-tune a TTT-ViT with Trainer"),
    "evaluate": ("ttt_hf.evaluation", "accuracy, top-5, images/s and a confusion matrix of a checkpoint"),
    "benchmark": ("ttt_hf.benchmark", "time and memory of every mixer and model across sequence lengths"),
    "precision": ("ttt_hf.precision", "float32 and bfloat16-autocast errors of every mixer against float64"),
    "quickstart": ("ttt_hf.quickstart", "train, evaluate, reload and classify on a bundled dataset (minutes on CPU)"),
    "presets": (None, "list the named model configurations"),
}


def usage() -> str:
    lines = ["usage: ttt-hf <command> [flags]   (ttt-hf <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:11s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ttt-hf: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if command == "presets":
        from .modeling import TTTViTConfig

        print("\n".join(TTTViTConfig.presets()))
        return 0
    sys.argv = [f"ttt-hf {command}", *rest]  # so --help shows the subcommand's name
    importlib.import_module(COMMANDS[command][0]).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
