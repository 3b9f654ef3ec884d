"""PNG plots of a run: training curves, the per-layer inner-loop loss, a confusion matrix (matplotlib, Agg)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(log_history: list[dict], path) -> None:
    """Training loss against step, and evaluation loss / accuracy where the run evaluated."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [e for e in log_history if "eval_loss" in e]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train")
    if evals:
        ax_loss.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation")
        if "eval_accuracy" in evals[0]:
            ax_acc.plot([e["step"] for e in evals], [e["eval_accuracy"] for e in evals], "o-", label="top-1")
        top = next((key for key in evals[0] if key.startswith("eval_top") and key.endswith("_accuracy")), None)
        if top:
            k = top[len("eval_top") : -len("_accuracy")]
            ax_acc.plot([e["step"] for e in evals], [e[top] for e in evals], "s--", label=f"top-{k}")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    save_figure(fig, path)


def plot_inner_losses(inner_losses: np.ndarray, path, title: str = "") -> None:
    """inner_losses [layers, steps + 1]: mean inner reconstruction loss at W_0 .. W_T for every TTT layer."""
    layers, points = inner_losses.shape
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * layers + 2), 4))
    width = 0.8 / points
    for t in range(points):
        label = "before (W_0)" if t == 0 else f"after step {t}"
        ax.bar(np.arange(layers) + (t - (points - 1) / 2) * width, inner_losses[:, t], width, label=label)
    ax.set(xlabel="layer", ylabel="inner loss", title=title or "inner-loop loss per layer")
    ax.set_xticks(np.arange(layers))
    ax.set_ylim(0, 1.25 * float(inner_losses.max()))  # headroom for the legend
    ax.legend(loc="upper right", ncol=min(points, 3), fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path, title: str = "") -> None:
    """matrix [true, predicted] counts; rows are normalised to show per-class recall."""
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    if len(class_names) <= 20:
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, path)


def plot_layers(rows: list[dict], path: str, title: str) -> None:
    layer_rows = [r for r in rows if r["level"] == "layer"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r["name"] for r in layer_rows):
        points = sorted(
            (r["tokens"], r["forward_backward_ms"], r["memory_mb"]) for r in layer_rows if r["name"] == name
        )
        tokens, ms, mb = zip(*points)
        axes[0].loglog(tokens, ms, "o-", label=name)
        axes[1].loglog(tokens, mb, "o-", label=name)
    axes[0].set(xlabel="tokens N", ylabel="forward + backward (ms)", title="time")
    axes[1].set(xlabel="tokens N", ylabel="memory (MB)", title="memory")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


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
    from .gpicl_evaluation import BASELINE_NAMES

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
    from .gpicl_tasks import parse_curriculum

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
