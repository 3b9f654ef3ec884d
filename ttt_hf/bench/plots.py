"""The benchmark's plot: time and memory of every layer against the number of tokens."""

from ..common.plots import plt, save_figure


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
