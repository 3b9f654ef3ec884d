"""The GPICL results table and comparison plot from meta-training runs (`python -m ttt_hf.gpicl.report RUN...`).

Each RUN is the --output_dir of a `ttt-hf meta-train` run. The table gives, per run: backbone and interventions,
parameters, the state a position carries after 99 examples, steps and time, accuracy after the last example on
unseen tasks of every evaluated dataset next to the SGD row (and on the meta-training tasks, for runs on a pool of
tasks), and the step at which that accuracy first left chance (> 20 %), or "not within N". `--windows N` adds the
periodic evaluations averaged per N steps (was a run still rising?); `--plot` draws them against steps.
"""

import argparse
import json
from pathlib import Path

from ..common.run_files import RESULTS_FILE
from ..hub.gpicl_card import interventions, unseen_sets
from .evaluation import BASELINE_NAMES, interval
from .meta_training import CHANCE_EXIT
from .tasks import DEFAULT_OPTIMIZER


def load_runs(paths) -> list[dict]:
    """The all_results.json of each run folder, with its "path"; a path that is not a finished run is an error."""
    runs = []
    for path in paths:
        if not (Path(path) / RESULTS_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a finished meta-training run (no {RESULTS_FILE}): give the --output_dir of "
                "`ttt-hf meta-train` runs that have ended, or zoo folders (a glob such as outputs/grid/q1-*/ keeps "
                "to folders)."
            )
        results = json.loads((Path(path) / RESULTS_FILE).read_text())
        results["path"] = str(path)
        runs.append(results)
    return runs


# config.json keys that record how a model was saved, not what it is
CONFIG_BOOKKEEPING = ("architectures", "auto_map", "transformers_version", "dtype", "torch_dtype", "_name_or_path")


def configuration_key(run: dict) -> str:
    """What makes runs one configuration: the model's config (but for how it was saved; none where `run` was read
    without it, as `load_runs` reads runs), every meta-training argument, the outer optimiser's settings (the
    defaults where a run predates their record) and the steps. Only the seed may differ."""
    config = {k: v for k, v in run.get("config", {}).items() if k not in CONFIG_BOOKKEEPING}
    optimizer = {**DEFAULT_OPTIMIZER, **(run.get("optimizer") or {})}
    return json.dumps([config, run["meta_arguments"], optimizer, run["train_steps"]], sort_keys=True)


def model_description(run: dict) -> str:
    """The backbone and any config overrides of a run, e.g. "ttt_linear (ttt_conv_size=2)"."""
    overrides = run["meta_arguments"].get("config_overrides")
    return run["backbone"] + (f" ({overrides})" if overrides else "")


def table(runs: list[dict], names: list[str] | None = None) -> str:
    """The markdown table of `runs` (see the module docstring); `names` adds a first column naming each run."""
    seen = ["seen"] if any("final_seen_accuracy_last" in r for r in runs) else []  # runs on a pool of tasks
    sets = seen + sorted({name for r in runs for name in unseen_sets(r)})
    head = (["model"] if names else []) + ["backbone", "meta-training", "params", "state (floats)", "steps", "time"]
    head += [name if name == "seen" else f"{name} (baselines)" for name in sets]
    head += ["left chance (unseen tasks of its training dataset)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(runs):
        meta, last = r["meta_arguments"], r["meta_arguments"]["sequence_length"] - 1
        minutes = f"{r['train_runtime'] / 60:.0f} min"
        cells = [f"`{names[i]}`"] if names else []
        cells += [model_description(r), interventions(meta, r.get("optimizer")), f"{r['num_parameters'] / 1e6:.2f} M",
                  f"{r['state_size']:,}", str(r["train_steps"]), minutes]  # fmt: skip
        for name in sets:
            value = r.get(f"final_{name}_accuracy_last")
            n = meta.get("final_eval_sequences", 1024)
            text = "—" if value is None else f"{100 * value:.1f} ± {100 * interval(value, n):.1f} %"
            found = {key: (r.get(key) or {}).get(name, {}).get(str(last)) for key in BASELINE_NAMES}
            shown = [f"{BASELINE_NAMES[key][0]} {100 * v:.1f}" for key, v in found.items() if v is not None]
            cells.append(text + (f" ({', '.join(shown)} %)" if shown else ""))
        step = r.get(f"steps_to_leave_plateau_unseen-{meta['dataset']}")
        cells.append(f"step {step}" if step is not None else f"not within {r['train_steps']}")
        lines.append("| " + " | ".join(cells) + " |")
    if not runs:
        return "No meta-training runs (`ttt-hf meta-train` writes them; `ttt-hf zoo store` keeps zoo learners)."
    lasts = " or ".join(sorted({str(r["meta_arguments"]["sequence_length"] - 1) for r in runs}, key=int))
    sequences = " or ".join(
        f"{n:,}" for n in sorted({r["meta_arguments"].get("final_eval_sequences", 1024) for r in runs})
    )
    sampling = {r.get("meta_test_sampling", "examples drawn with replacement") for r in runs}
    lines += ["", f"State: the floats a sequence carries from one position to the next. Accuracy after {lasts} "
              f"examples (all but the last of a sequence) on tasks never seen in meta-training (test splits, "
              f"{sequences} sequences, {' / '.join(sorted(sampling))}; ± a 95 % interval). Baselines, this "
              f"project's, on the same examples: SGD (a linear classifier trained by SGD; the paper's SGD numbers are "
              f"its own), 1-NN (the nearest example), LR (logistic regression trained to convergence). Left chance: "
              f"the first evaluation with accuracy above {100 * CHANCE_EXIT:.0f} % at the last position."]  # fmt: skip
    return "\n".join(lines)


def windows(runs: list[dict], task_set: str, width: int) -> str:
    """The markdown table of the runs' periodic evaluations on `task_set` (accuracy at the last position), averaged
    per `width` steps of meta-training: whether a run was still rising when it ended, read with less noise than one
    evaluation gives."""
    from .plots import last_position_accuracy

    if width < 1:
        raise ValueError(f"The windows must be a positive number of steps, got {width}.")
    end = max(r["train_steps"] for r in runs)
    edges = range(0, end, width)
    head = ["run"] + [f"steps {lo + 1:,}–{min(lo + width, end):,}" for lo in edges]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        points = last_position_accuracy(r["curves"][:-1], task_set)  # the last entry is the final evaluation
        cells = [f"`{Path(r['path']).name}`"]
        for lo in edges:
            inside = [a for step, a in points if lo < step <= lo + width]
            cells.append(f"{100 * sum(inside) / len(inside):.1f} %" if inside else "—")
        lines.append("| " + " | ".join(cells) + " |")
    sequences = " or ".join(f"{n:,}" for n in sorted({r["meta_arguments"].get("eval_sequences", 256) for r in runs}))
    lines += ["", f"The mean of the periodic evaluations inside each window, accuracy after the last example on "
              f"{task_set} ({sequences} sequences per evaluation; — where a run has none)."]  # fmt: skip
    return "\n".join(lines)


def plot(runs: list[dict], path, task_set: str) -> None:
    """Accuracy at the last position on `task_set` against meta-training steps, one line per run: runs of one recipe
    and length (seeds) share a colour and differ in marker, each labelled with its folder."""
    from ..common.plots import plt, save_figure
    from .plots import last_position_accuracy

    fig, ax = plt.subplots(figsize=(11, 4))  # the legend to the right of the curves, never over them
    recipes: dict[str, list[str]] = {}  # everything of a run but its seed -> the folders drawn so far
    for r in runs:
        points = last_position_accuracy(r["curves"][:-1], task_set)  # the last entry is the final evaluation
        if points:
            key = configuration_key(r)
            folders = recipes.setdefault(key, [])
            color, marker = f"C{list(recipes).index(key) % 10}", "os^vD"[len(folders) % 5]
            folders.append(Path(r["path"]).name)
            recipe = f"{model_description(r)}, {interventions(r['meta_arguments'], r.get('optimizer'))}"
            ax.plot(*zip(*points), f"{marker}-", ms=3, lw=1, color=color, label=f"{folders[-1]}: {recipe}")
    ax.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance")
    ax.axhline(CHANCE_EXIT, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="meta-training step", ylabel="accuracy at the last position", title=task_set, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ttt_hf.gpicl.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="--output_dir of ttt-hf meta-train runs")
    parser.add_argument("--plot", help="write the comparison plot (accuracy against steps) here")
    parser.add_argument("--task_set", default="unseen-mnist-5k", help="the task set of the plot and the windows")
    parser.add_argument("--windows", type=int, help="also print the periodic evaluations averaged per this many steps")
    args = parser.parse_args(argv)
    if args.windows is not None and args.windows < 1:
        parser.error(f"--windows must be a positive number of steps, got {args.windows}.")
    try:
        runs = load_runs(args.runs)
    except FileNotFoundError as error:  # a folder that is not a finished run: say which, without a traceback
        parser.error(str(error))
    print(table(runs))
    if args.windows is not None:
        print("\n" + windows(runs, args.task_set, args.windows))
    if args.plot:
        plot(runs, args.plot, args.task_set)


if __name__ == "__main__":
    main()
