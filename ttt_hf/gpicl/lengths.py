"""More examples than meta-training showed: in-context accuracy of saved learners on longer sequences.

    python -m ttt_hf.gpicl.lengths FOLDER... [--lengths 100,200,400] [--sequences N] [--baselines all|NAMES]
                                             [--csv OUT.csv] [--plot OUT.png]

Each FOLDER is a meta-trained learner (a run's --output_dir or a zoo folder). For every length T it draws sequences
of T distinct test images of unseen tasks (the meta-test sampler of the run, with T in place of the training
length) and measures the accuracy at every position; the rows give it after 99, 199, ... examples and at the last
one, with a 95 % interval. A learner with learned positions sees positions it was never trained on past its
training length (its table is longer, not trained); `position_embedding_type="none"` is the configuration meant to
run past it. `--baselines` adds the simple learners on the same sequences: `all` (SGD, 1-NN, logistic
regression), or those named (`--baselines sgd,nearest_neighbour`: logistic regression to convergence is the slow one,
about an hour of one core at 399 examples and 512 sequences).
"""

import argparse
import json
from pathlib import Path

from ..common.run_files import RESULTS_FILE, recorded_seed, write_csv
from .evaluation import BASELINE_NAMES, BASELINES, in_context_accuracy, interval
from .meta_training import MetaArguments, unseen_sampler


def accuracy_by_length(folder, lengths=(100, 200, 400), sequences: int | None = None, datasets=None,
                       baseline_draws: set | None = None, baseline_names=tuple(BASELINES)) -> list[dict]:  # fmt: skip
    """Rows {learner, task_set, length, examples, accuracy, interval, sequences, positions, trained_length}: the
    accuracy after `examples` examples (99, 199, ... that fit, and the last) on unseen tasks, for each sequence
    length, over `sequences` sequences (default: the run's final evaluation's, so that at the trained length it gives
    back the run's own final accuracy). With `baseline_draws` (a set the caller shares between folders), also rows of
    the simple learners on the same sequences, learner "SGD, seed 42" and so on, positions "": once per set of
    sequences, as runs of one seed and data draw the same ones; `baseline_names` chooses among BASELINES."""
    from ..modeling import GPICLForInContextClassification

    folder = Path(folder)
    results = json.loads((folder / RESULTS_FILE).read_text())
    seed = recorded_seed(folder)
    model = GPICLForInContextClassification.from_pretrained(folder)
    trained = results["meta_arguments"]["sequence_length"]
    sequences = sequences or results["meta_arguments"]["final_eval_sequences"]
    rows = []
    for dataset in datasets or [d.strip() for d in results["meta_arguments"]["eval_datasets"].split(",")]:
        for length in lengths:
            meta = MetaArguments(**{**results["meta_arguments"], "sequence_length": length})
            sampler = unseen_sampler(meta, dataset, seed)  # its batches depend on the step only: one for all learners
            accuracy = in_context_accuracy(model, sampler, sequences)["accuracy"]
            positions = sorted({*range(trained - 1, length, trained), length - 1})
            learners = {folder.name: (accuracy, model.config.position_embedding_type)}
            key = (dataset, length, seed, sequences, meta.image_size, meta.data_dir, tuple(positions))
            if baseline_draws is not None and key not in baseline_draws:
                baseline_draws.add(key)
                for name in baseline_names:
                    found = BASELINES[name](sampler, positions, sequences)
                    learners[f"{BASELINE_NAMES[name][0]}, seed {seed}"] = (found, "")
            for learner, (found, kind) in learners.items():
                for examples in positions:
                    rows.append({
                        "learner": learner, "task_set": f"unseen-{dataset}", "length": length, "examples": examples,
                        "accuracy": found[examples], "interval": interval(found[examples], sequences),
                        "sequences": sequences, "positions": kind, "trained_length": trained,
                    })  # fmt: skip
    return rows


def plot(rows: list[dict], path) -> None:
    """Accuracy against examples seen, one line per learner and task set, over the longest length measured."""
    from ..common.plots import plt, save_figure

    sets = sorted({row["task_set"] for row in rows})
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    for ax, task_set in zip(axes[0], sets):
        for trained in sorted({row["trained_length"] for row in rows if row["task_set"] == task_set}):
            ax.axvline(trained - 1, color="black", lw=0.9, ls="--", label=f"meta-trained on {trained} positions")
        simple = iter("sDv^<>")  # a marker per simple learner
        for learner in dict.fromkeys(row["learner"] for row in rows):
            mine = [row for row in rows if row["learner"] == learner and row["task_set"] == task_set]
            if not mine:  # this learner was not evaluated on this task set
                continue
            longest = max(row["length"] for row in mine)
            points = sorted((row["examples"], row["accuracy"]) for row in mine if row["length"] == longest)
            if not mine[0]["positions"]:  # a simple learner
                ax.plot(*zip(*points), f"{next(simple, 'o')}--", ms=4, lw=1, color="black", alpha=0.6, label=learner)
                continue
            positions = "no" if mine[0]["positions"] == "none" else mine[0]["positions"]
            ax.plot(*zip(*points), "o-", label=f"{learner} ({positions} positions)")
        ax.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance")
        ax.set(xlabel="labelled examples seen in the context", ylabel="accuracy on the next example", ylim=(0, 1),
               title=task_set.replace("unseen-", "unseen tasks, ") + " test images")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ttt_hf.gpicl.lengths", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="saved learners (run folders or zoo folders)")
    parser.add_argument("--lengths", default="100,200,400", help="sequence lengths T (comma-separated)")
    parser.add_argument(
        "--sequences", type=int, help="sequences per length and task set (default: the run's final evaluation's)"
    )
    parser.add_argument("--datasets", help="task sets (default: each run's --eval_datasets)")
    parser.add_argument("--baselines", default="", help=f"also the simple learners: all, or some of "
                        f"{','.join(BASELINES)} (comma-separated)")  # fmt: skip
    parser.add_argument("--csv", help="write the rows here")
    parser.add_argument("--plot", help="write the plot here (PNG)")
    args = parser.parse_args(argv)
    lengths = [int(value) for value in args.lengths.split(",")]
    datasets = [name.strip() for name in args.datasets.split(",")] if args.datasets else None
    names = list(BASELINES) if args.baselines == "all" else [n.strip() for n in args.baselines.split(",") if n.strip()]
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        parser.error(f"--baselines: unknown {unknown}; the simple learners are {', '.join(BASELINES)}.")
    shared = set() if names else None
    rows = [row for folder in args.folders
            for row in accuracy_by_length(folder, lengths, args.sequences, datasets, shared, names)]  # fmt: skip
    print("| learner | positions | task set | T | after n examples | accuracy |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['learner']} | {row['positions'] or '—'} | {row['task_set']} | {row['length']} "
              f"| {row['examples']} | {100 * row['accuracy']:.1f} ± {100 * row['interval']:.1f} % |")  # fmt: skip
    if args.csv:
        write_csv(rows, args.csv)
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
