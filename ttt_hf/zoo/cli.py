"""`ttt-hf zoo ...`: the command line of the zoo (see ttt_hf/zoo/__init__.py for the commands)."""

import argparse
import sys

from . import runs
from .folders import measure_speed, publish_zoo, refresh_cards, space_repo_ids, store
from .registry import MODEL_CARDS, SETTINGS, SPACE_MODELS, ZOO, get_entry
from .runs import MAX_ARCHIVE_BYTES, MAX_ARCHIVES, pack, unpack
from .tables import listing, mixers, results_table


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
    published.add_argument("names", nargs="*", metavar="NAME",
                           help="default: every trained entry (with --space: the Space's models)")  # fmt: skip
    published.add_argument("--org", required=True)
    published.add_argument("--dry-run", "--dry_run", metavar="DIR", help="write DIR/NAME/ for each; upload nothing")
    published.add_argument("--tag", help="tag every published commit (e.g. v1.0)")
    published.add_argument("--collection", metavar="TITLE", help="gather the published entries into ORG's collection")
    published.add_argument("--space", metavar="NAME", help="then publish the demo's Space on them as ORG/NAME "
                           "(default models: the Space's own, `ttt-hf zoo space`)")  # fmt: skip
    space = commands.add_parser("space", help="write the demo as a Hub Space folder (app.py, requirements, card)")
    space.add_argument("directory", help="a new or empty folder")
    space.add_argument("--org", required=True, help="the namespace the models are published to (ORG/<name>)")
    space.add_argument("--models", nargs="+", default=(), metavar="NAME", help="zoo entries (default: "
                       + ", ".join(SPACE_MODELS) + ")")  # fmt: skip
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
    packed.add_argument("--without_weights", action="store_true", help="leave out *.safetensors (results and plots)")
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
        results = runs.train_many(names, args.output_dir or "outputs/zoo", args.parallel, extra)
        failed = [name for name, code in results.items() if code]
        if failed:
            raise SystemExit(
                f"ttt-hf zoo train: {len(failed)} of {len(results)} runs failed (see their .log files): {failed}"
            )
    elif args.command == "train":
        from ..gpicl import meta_training
        from ..vision import training

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
        published = publish_zoo(args.org, args.names, args.dry_run, args.model_cards, args.tag, args.collection,
                                args.space)  # fmt: skip
        for result in published:
            where = f"dry run in {result.url}" if result.commit is None else f"commit {result.commit}: {result.url}"
            print(f"{result.repo_id}: {len(result.files)} files ({where})")
    elif args.command == "space":
        from ..hub.space import write_space

        target = write_space(args.directory, space_repo_ids(args.org, args.models, args.model_cards))
        command = " ".join(["ttt-hf zoo publish --org", args.org, "--space ttt-hf-demo", *args.models])
        print(f"wrote the Space folder {target} (`cd {target} && python app.py` runs it once its models are on the "
              f"Hub). `{command}` publishes the models and this Space, written afresh.")  # fmt: skip
    elif args.command == "table":
        print(results_table(args.model_cards, args.learners))
    elif args.command == "cards":
        for target in refresh_cards(args.model_cards):
            print(f"rewrote {target / 'README.md'}")
    elif args.command == "speed":
        for name, speed in measure_speed(args.model_cards, names=args.names).items():
            print(f"{name}: {speed:,.0f} images/s")
    elif args.command == "pack":
        for path in pack(args.root, args.out, args.max_files, args.max_bytes, not args.without_weights):
            print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    elif args.command == "unpack":
        for run in unpack(args.archives, args.root, args.force):
            entry = f"`ttt-hf zoo store {run.name} {run}`" if run.name in ZOO else "(not a zoo entry)"
            print(f"{run} {entry}")
    else:
        print(mixers())


if __name__ == "__main__":
    main()
