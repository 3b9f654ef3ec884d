"""The Classify tab's work: a TTT-ViT's top labels for one image (through `pipeline("image-classification")`), and
the test-time training it does on that image (each TTT layer's inner reconstruction loss from W_0 to W_T)."""

from dataclasses import dataclass

import torch

from ..hub.vit_card import paper_mixer_name


@dataclass
class Classification:
    labels: dict[str, float]  # the pipeline's top labels -> probability, best first
    inner_losses: list[list[float]]  # per TTT layer: its inner loss at W_0 .. W_T, mean over heads ([]: no TTT layer)
    mixer: str  # the model's token mixer, as the paper names it


def classify(pipe, image, top_k: int = 5) -> Classification:
    """Classify `image` (a PIL image) with the classifier pipeline `pipe`, and read its inner losses from a forward
    pass on the pipeline's own preprocessing of the image."""
    answers = pipe(image, top_k=top_k)
    pixels = pipe.preprocess(image)["pixel_values"]  # exactly what the pipeline fed the model
    with torch.no_grad():  # on the model's device: the pipeline puts it on an accelerator where there is one
        outputs = pipe.model(pixel_values=pixels.to(pipe.model.device), output_inner_losses=True)
    losses = [layer[0].mean(0).tolist() for layer in outputs.inner_losses]  # [B, H, T + 1] -> [T + 1] per layer
    return Classification(
        {a["label"]: a["score"] for a in answers}, losses, paper_mixer_name(pipe.model.config.to_dict())
    )


def inner_loss_text(result: Classification) -> str:
    """The inner losses in words (the plot's caption)."""
    if not result.inner_losses:
        return f"{result.mixer} has no inner loop: its layers do not train on the image."
    drops = [1 - losses[-1] / losses[0] for losses in result.inner_losses if losses[0] > 0] or [0.0]
    steps = len(result.inner_losses[0]) - 1
    return (
        f"{result.mixer}: each of its {len(result.inner_losses)} TTT layers took {steps} inner gradient "
        f"step{'s' * (steps != 1)} on this image's own tokens; the reconstruction loss fell by "
        f"{100 * min(drops):.0f}–{100 * max(drops):.0f} % from W_0 to W_{steps}."
    )


def inner_loss_figure(results: dict[str, Classification]):
    """One panel per model: each TTT layer's inner loss against the inner step (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.2), squeeze=False)
    for axis, (name, result) in zip(axes[0], results.items()):
        axis.set_title(f"{name}\n{result.mixer}", fontsize=9)
        if not result.inner_losses:
            axis.text(0.5, 0.5, "no inner loop\n(nothing trains at test time)", ha="center", va="center")
            axis.set_axis_off()
            continue
        for layer, losses in enumerate(result.inner_losses, start=1):
            axis.plot(range(len(losses)), losses, marker="o", label=f"layer {layer}")
        steps = len(result.inner_losses[0])
        axis.set_xticks(range(steps), [f"W_{t}" for t in range(steps)])
        axis.set_xlabel("inner step on this image")
        axis.set_ylabel("reconstruction loss")
        axis.legend(fontsize=7)
    figure.tight_layout()
    plt.close(figure)
    return figure
