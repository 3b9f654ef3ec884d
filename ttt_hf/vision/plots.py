"""PNG plots of an image-classifier run: training curves, the per-layer inner-loop loss, a confusion matrix."""

import numpy as np

from ..common.plots import plt, save_figure


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
