"""PNG plots of a meta-training run: in-context accuracy against examples seen, and the meta-training curves."""

from ..common.plots import plt, save_figure
from .evaluation import BASELINE_NAMES
from .tasks import parse_curriculum


def last_position_accuracy(curves: list[dict], task_set: str) -> list[tuple[int, float]]:
    """(step, accuracy at the last position) of every evaluation of a meta-training run on `task_set`."""
    return [(c["step"], c[task_set][-1]) for c in curves if task_set in c]


def task_set_title(name: str) -> str:
    """'unseen-mnist-5k' -> 'tasks never seen in meta-training, on mnist-5k test images'."""
    if name.startswith("unseen-"):
        return f"unseen tasks, {name[len('unseen-') :]} test images"
    return name.replace("-", " ")


def plot_in_context_accuracy(results: dict, path) -> None:
    """Accuracy against examples seen, on each set of unseen tasks: the meta-trained learner (its final evaluation)
    and the simple learners trained on the same examples (SGD at several positions; 1-NN and logistic regression
    after the last example)."""
    curves = results["curves"][-1]
    names = [name for name in curves if name != "step"]
    sequences = (results.get("meta_arguments") or {}).get("final_eval_sequences")
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(range(len(curves[name])), curves[name], label=f"{results['backbone']} (in context, meta-trained)")
        for (key, (_, label)), marker in zip(BASELINE_NAMES.items(), "sDv"):
            points = results.get(key, {}).get(name)
            if points:
                ax.plot([int(t) for t in points], list(points.values()), f"{marker}--", label=label)
        ax.axhline(1 / 10, color="grey", lw=0.8, ls=":", label="chance (10 classes)")
        ax.set(
            xlabel="labelled examples seen in the context",
            ylabel="accuracy on the next example",
            title=task_set_title(name) + (f"\n({sequences:,} sequences)" if sequences else ""),
            ylim=(0, 1),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, path)


def plot_meta_training(results: dict, path) -> None:
    """Meta-training loss and, per evaluated task set, the accuracy at the last position against steps: one point
    per evaluation (the final evaluation, on more sequences, replaces the periodic one at the same step), with the
    end of bursty sequences (`--distinct_examples`) marked."""
    train = [(e["step"], e["loss"]) for e in results["log_history"] if "loss" in e]
    curves = list({c["step"]: c for c in results["curves"]}.values())  # the last evaluation at each step
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    if train:
        ax_loss.plot(*zip(*train))
    names = [name for name in curves[0] if name != "step"] if curves else []
    for name in names:
        ax_acc.plot(*zip(*last_position_accuracy(curves, name)), "o-", ms=3, label=task_set_title(name))
    ax_acc.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance")
    meta = results.get("meta_arguments") or {}
    stages = parse_curriculum(meta.get("distinct_examples"), "--distinct_examples")
    if stages:
        for ax in (ax_loss, ax_acc):
            ax.axvline(stages[-1][0], color="black", lw=0.9, ls="--",
                       label=f"bursty sequences until step {stages[-1][0]}, fresh after")  # fmt: skip
    ax_loss.set(xlabel="meta-training step", ylabel="meta-training loss", title=f"{results['backbone']}: loss")
    ax_acc.set(xlabel="meta-training step", ylabel="accuracy after the last example", ylim=(0, 1),
               title="in-context accuracy on unseen tasks")  # fmt: skip
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_figure(fig, path)
