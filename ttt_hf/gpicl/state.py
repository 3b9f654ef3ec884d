"""State, not parameters: in-context accuracy against the state a learner carries, seeds of one configuration pooled.

    python -m ttt_hf.gpicl.state RUN... [--simple_learners] [--csv OUT.csv] [--plot OUT.png]

Each RUN is a meta-training run's --output_dir or a zoo folder. Runs that differ only in their seed are one
configuration (same model config, meta-training arguments, optimiser settings and steps); the table
gives per configuration the floats a sequence carries after the last example (`state_size`), the parameters, every
seed's accuracy after the last example on each set of unseen tasks, and their mean ± half-range; `--simple_learners`
adds the simple learners on the same sequences as the configuration's seeds (question 5's comparison). The plot puts
each configuration at its state size (log scale), its seeds as dots and their mean as a marker with the range as
error bar, a line through one backbone's configurations, and the simple learners' mean (1-NN, logistic regression, SGD
on the same sequences) as horizontal lines.
"""

import argparse
import json
from pathlib import Path

from ..common.arguments import DEFAULT_SEED
from ..common.run_files import TRAINING_ARGS_FILE, recorded_seed, write_csv
from ..hub.gpicl_card import unseen_sets
from .evaluation import BASELINE_NAMES, interval
from .report import configuration_key, load_runs

BACKBONE_NAMES = {"transformer": "Transformer", "lstm": "LSTM", "ttt_linear": "TTT-Linear", "ttt_mlp": "TTT-MLP"}


def load(paths) -> list[dict]:
    """The runs' results, each with its `config` and `seed` (None where the run did not record its arguments)."""
    runs = load_runs(paths)
    for run in runs:
        folder = Path(run["path"])
        run["config"] = json.loads((folder / "config.json").read_text())
        run["seed"] = recorded_seed(folder) if (folder / TRAINING_ARGS_FILE).is_file() else None
    return runs


def configuration(run: dict) -> str:
    """What a run is, without its seed: e.g. "TTT-Linear, 16 heads" or "TTT-MLP, hidden ratio 4"."""
    config = run["config"]
    name = BACKBONE_NAMES[config["backbone"]]
    if config["backbone"] == "ttt_linear":
        heads = config["num_attention_heads"]
        name += f", {heads} head{'s' if heads > 1 else ''}"
    elif config["backbone"] == "ttt_mlp":
        name += f", hidden ratio {config['inner_hidden_ratio']}"
    return name


def group(runs: list[dict]) -> list[dict]:
    """One entry per configuration, by backbone (BACKBONE_NAMES' order) and state size, its runs by seed (the
    default first): {name, runs, state_size, num_parameters, train_steps, accuracy: {task set: [per run]}}. Two
    runs of one configuration with the same seed are an error (the same run given twice would halve the spread)."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(configuration_key(run), []).append(run)
    names = [configuration(members[0]) for members in groups.values()]
    entries = []
    for members in groups.values():
        seeds = [r["seed"] for r in members if r["seed"] is not None]
        if len(seeds) != len(set(seeds)):
            paths = ", ".join(r["path"] for r in members)
            raise ValueError(f"Runs of one configuration share a seed ({paths}): give each run once.")
        members.sort(key=lambda r: (r["seed"] is None, r["seed"] != DEFAULT_SEED, r["seed"] or 0))  # 42, 1, 2 ...
        name = configuration(members[0])
        if names.count(name) > 1:  # configurations that differ elsewhere (recipe, data, width): name a run of each
            name += f" ({Path(members[0]['path']).name})"
        sets = sorted({task_set for r in members for task_set in unseen_sets(r)})
        accuracy = {s: [r.get(f"final_{s}_accuracy_last") for r in members] for s in sets}
        first = members[0]
        entries.append({"name": name, "runs": members, "state_size": first["state_size"], "accuracy": accuracy,
                        "num_parameters": first["num_parameters"], "train_steps": first["train_steps"]})  # fmt: skip
    order = list(BACKBONE_NAMES)
    return sorted(entries, key=lambda g: (order.index(g["runs"][0]["backbone"]), g["state_size"]))


def baselines(groups: list[dict], task_set: str) -> dict[str, float]:
    """The simple learners' accuracy after the last example on `task_set` (short name -> mean), once per set of
    sequences: runs with the same seed and sequence count drew the same ones, whatever their configuration."""
    found: dict[str, dict[tuple, float]] = {}
    for r in (r for g in groups for r in g["runs"]):
        meta = r["meta_arguments"]
        draw = (r["path"] if r["seed"] is None else r["seed"], meta["sequence_length"], meta["image_size"],
                meta.get("final_eval_sequences"), r.get("meta_test_sampling"), meta.get("data_dir"))  # fmt: skip
        for key, (short, _) in BASELINE_NAMES.items():
            value = (r.get(key) or {}).get(task_set, {}).get(str(meta["sequence_length"] - 1))
            if value is not None:
                found.setdefault(short, {})[draw] = value
    return {short: sum(values.values()) / len(values) for short, values in found.items()}


def measured(group: dict, task_set: str) -> list[float]:
    """A configuration's accuracies on `task_set`, one per seed that measured it."""
    return [v for v in group["accuracy"].get(task_set, []) if v is not None]


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and half-range of the values (half-range 0 for one value)."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def task_sets(groups: list[dict]) -> list[str]:
    """The sets of unseen tasks measured, those of the meta-training dataset first."""
    trained = {f"unseen-{r['meta_arguments']['dataset']}" for g in groups for r in g["runs"]}
    return sorted({s for g in groups for s in g["accuracy"]}, key=lambda s: (s not in trained, s))


def table(groups: list[dict], simple_learners: bool = False) -> str:
    """The markdown table: one row per configuration (see the module docstring); `simple_learners` adds, per task
    set, the simple learners on the same sequences as the configuration's seeds (each averaged over those seeds),
    the comparison of question 5."""
    if not groups:
        return "No runs."
    sets = task_sets(groups)
    head = ["learner", "state (floats)", "params", "steps", "seeds"]
    head += [f"{s}: per seed" for s in sets] + [f"{s}: mean ± half-range" for s in sets]
    head += [f"{s}: simple learners, same sequences" for s in sets] if simple_learners else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        seeds = ", ".join("?" if r["seed"] is None else str(r["seed"]) for r in g["runs"])
        size, parameters = f"{g['state_size']:,}", f"{g['num_parameters'] / 1e6:.2f} M"
        cells = [g["name"], size, parameters, f"{g['train_steps']:,}", seeds]
        per_seed, means = [], []
        for s in sets:
            values = measured(g, s)
            per_seed.append(" / ".join(f"{100 * v:.1f}" for v in values) + " %" if values else "—")
            mean, half = spread(values) if values else (None, None)
            means.append("—" if mean is None else f"{100 * mean:.1f} ± {100 * half:.1f} %")
        simple = []
        for s in sets if simple_learners else []:
            found = sorted(baselines([g], s).items())
            simple.append(", ".join(f"{short} {100 * v:.1f}" for short, v in found) + " %" if found else "—")
        lines.append("| " + " | ".join(cells + per_seed + means + simple) + " |")
    sequences = sorted({r["meta_arguments"].get("final_eval_sequences", 1024) for g in groups for r in g["runs"]})
    widest = max(interval(0.5, n) for n in sequences)
    counts = " or ".join(f"{n:,}" for n in sequences)
    lines += [
        "",
        f"Accuracy after the last example on tasks never seen in meta-training ({counts} sequences of "
        f"distinct test images per seed; each seed's 95 % interval at most ± {100 * widest:.1f} points). "
        "State: the floats a sequence carries from one position to the next after the last example.",
    ]
    if simple_learners:  # a mean over seeds: the interval of its test sequences, taken together
        seeds = min(len(g["runs"]) for g in groups)
        pooled = max(interval(0.5, seeds * n) for n in sequences)
        lines[-1] += (
            " Simple learners: 1-NN (the nearest example), LR (logistic regression trained to convergence) and "
            "SGD (this project's linear classifier) trained on the same examples, averaged over the configuration's "
            "seeds. "
            f"A mean over {seeds} or more seeds stands on {seeds} times the sequences: ± at most "
            f"{100 * pooled:.1f} points from the test sequences alone, the learner's and the simple learners' alike "
            "(an underestimate: the seeds' sequences share the unseen tasks, each seed with its own images; the "
            "half-range shows how much meta-training varies)."
        )
    return "\n".join(lines)


def rows(groups: list[dict]) -> list[dict]:
    """One CSV row per run and task set."""
    out, sets = [], task_sets(groups)
    for g in groups:
        for s in sets:
            for r, value in zip(g["runs"], g["accuracy"].get(s, [])):
                if value is not None:
                    n = r["meta_arguments"].get("final_eval_sequences", 1024)
                    out.append({"learner": g["name"], "run": Path(r["path"]).name, "seed": r["seed"],
                                "state_size": g["state_size"], "num_parameters": g["num_parameters"],
                                "train_steps": g["train_steps"], "task_set": s, "accuracy": value,
                                "interval": interval(value, n), "sequences": n})  # fmt: skip
    return out


def plot(groups: list[dict], path) -> None:
    """Accuracy after the last example against state size (log), one panel per set of unseen tasks."""
    from ..common.plots import plt, save_figure

    sets = task_sets(groups)
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.4), squeeze=False)
    for ax, task_set in zip(axes[0], sets):
        for i, g in enumerate(groups):
            values = measured(g, task_set)
            if not values:
                continue
            color = f"C{i % 10}"
            mean, half = spread(values)
            ax.scatter([g["state_size"]] * len(values), values, s=10, color=color, alpha=0.5)
            ax.errorbar(g["state_size"], mean, yerr=half, fmt="o", ms=7, capsize=4, color=color,
                        label=f"{g['name']} ({len(values)} seed{'s' if len(values) > 1 else ''})")  # fmt: skip
        for backbone in {g["runs"][0]["backbone"] for g in groups}:  # one backbone's states, joined by a line
            points = sorted((g["state_size"], spread(values)[0]) for g in groups
                            if g["runs"][0]["backbone"] == backbone and (values := measured(g, task_set)))  # fmt: skip
            if len(points) > 1:
                ax.plot(*zip(*points), color="grey", lw=0.8, zorder=0)
        for (short, value), style in zip(sorted(baselines(groups, task_set).items()), ("--", "-.", (0, (1, 3)))):
            ax.axhline(value, color="black", lw=0.9, ls=style, label=f"{short} (mean over the seeds' sequences)")
        ax.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance")
        ax.set(xscale="log", xlabel="state: floats carried after the last example (log)", ylim=(0, 1),
               ylabel="accuracy after the last example",
               title=task_set.replace("unseen-", "unseen tasks, ") + " test images")  # fmt: skip
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ttt_hf.gpicl.state", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="meta-training run folders or zoo folders")
    parser.add_argument("--csv", help="write one row per run and task set here")
    parser.add_argument("--plot", help="write the plot (accuracy against state size) here")
    parser.add_argument("--simple_learners", action="store_true", help="add 1-NN, logistic regression and SGD on "
                        "each configuration's sequences, averaged over its seeds")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        groups = group(load(args.runs))
    except (FileNotFoundError, ValueError) as error:  # not a finished run, or one run given twice
        parser.error(str(error))
    print(table(groups, simple_learners=args.simple_learners))
    if args.csv:
        write_csv(rows(groups), args.csv)
    if args.plot:
        plot(groups, args.plot)
    return groups


if __name__ == "__main__":
    main()
