"""Evaluate a checkpoint (directory or Hub id) on a dataset split: accuracy, top-5, images/second (model
forward only, preprocessing excluded) and a confusion-matrix PNG, written to `<output_dir>/eval_results.json`
(by default a folder named for the model, dataset and split, so evaluations do not overwrite each other)."""

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModelForImageClassification, HfArgumentParser

from ..common.checkpoints import from_pretrained
from ..common.data import BUNDLED_DATASETS, drop_unreadable_images, load_image_dataset
from ..common.run_files import SAMPLE_IMAGE
from .metrics import TopKAccuracy
from .plots import plot_confusion_matrix
from .transforms import EvalTransform


def write_sample(folder, image, label: str) -> dict:
    """Save `image` (a PIL image, as the dataset holds it) as the run's sample image and record what the saved model
    in `folder` predicts for that file through `pipeline("image-classification")`, which the card's usage example
    prints: {"file", "label" (the true one), "predicted", "score"}."""
    from transformers import pipeline

    path = os.path.join(folder, SAMPLE_IMAGE)
    image.save(path, format="PNG")
    top = pipeline("image-classification", model=str(folder), device=-1)(path, top_k=1)[0]
    return {
        "file": SAMPLE_IMAGE,
        "label": str(label),
        "predicted": top["label"],
        "score": round(float(top["score"]), 4),
    }


@dataclass
class EvaluationArguments:
    model_name_or_path: str = field(metadata={"help": "Checkpoint directory or Hub id."})
    dataset: str = field(default="fashion-mnist", metadata={"help": "Bundled dataset, imagefolder dir or Hub name."})
    split: str = field(default="test", metadata={"help": "train, validation or test."})
    data_dir: str | None = field(default=None, metadata={"help": "Directory of the fashion-mnist IDX files."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate a fixed random subset."})
    check_images: bool = field(
        default=True, metadata={"help": "Decode the split's images once first, naming any corrupt file."}
    )
    skip_corrupt_images: bool = field(default=False, metadata={"help": "Leave unreadable images out, counted."})
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the dataset's splits (the training run's --split_seed)."}
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device."})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16."})
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where eval_results.json and the PNG go (default: outputs/eval/<model>-<dataset>-<split>)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub checkpoint's own code."})


def default_output_dir(args: EvaluationArguments) -> str:
    """outputs/eval/<model>-<dataset>-<split>, from the last path component of the model and dataset names."""
    model, dataset = (os.path.basename(os.path.normpath(name)) for name in (args.model_name_or_path, args.dataset))
    return os.path.join("outputs", "eval", f"{model}-{dataset}-{args.split}")


def evaluate_checkpoint(args: EvaluationArguments) -> dict:
    args.output_dir = args.output_dir or default_output_dir(args)
    model = (
        from_pretrained(
            AutoModelForImageClassification,
            args.model_name_or_path,
            trust_remote_code=args.trust_remote_code,
            dtype=getattr(torch, args.dtype),
        )
        .to(args.device)
        .eval()
    )
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    data = load_image_dataset(
        args.dataset, data_dir=args.data_dir, seed=args.split_seed, max_eval_samples=args.max_eval_samples,
        check_images=False,
    )  # fmt: skip
    if args.split not in data:
        raise ValueError(f"Unknown split {args.split!r}; the dataset has {', '.join(data)}.")
    split = data[args.split]
    if args.check_images and args.dataset not in BUNDLED_DATASETS:  # only the split evaluated
        split = drop_unreadable_images({args.split: split}, args.skip_corrupt_images)[args.split]
    class_names = split.features["label"].names
    if len(class_names) != model.config.num_labels:
        raise ValueError(
            f"The dataset has {len(class_names)} classes but the model predicts {model.config.num_labels} "
            "(`num_labels`): evaluate on the dataset it was trained on, or fine-tune it first."
        )
    transform = EvalTransform(processor)
    logits, labels, seconds = [], [], 0.0
    with torch.inference_mode():
        for start in tqdm(range(0, len(split), args.batch_size), desc=f"evaluating on {args.split}", unit="batch"):
            batch = transform(split[start : start + args.batch_size])
            pixels = torch.stack(batch["pixel_values"]).to(args.device, model.dtype)  # [B, C, H, W]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            tic = time.perf_counter()
            out = model(pixels).logits.float()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds += time.perf_counter() - tic
            logits.append(out.cpu())
            labels.append(torch.tensor(batch["labels"]))
    logits, labels = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    metrics = TopKAccuracy().compute(predictions=logits, references=labels, k=5)
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    np.add.at(matrix, (labels, logits.argmax(1)), 1)
    results = {
        **{f"{args.split}_{k}": v for k, v in metrics.items()},
        "images": len(labels),
        "images_per_second": len(labels) / seconds,
        "device": str(args.device),
        "dtype": args.dtype,
        "arguments": asdict(args),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "eval_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot_confusion_matrix(
        matrix,
        class_names,
        os.path.join(args.output_dir, "confusion_matrix.png"),
        title=f"{os.path.basename(args.model_name_or_path.rstrip('/'))} on {args.dataset} {args.split}",
    )
    return results


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses(
        args=sys.argv[1:] if argv is None else argv
    )
    results = evaluate_checkpoint(args)
    print(json.dumps({k: v for k, v in results.items() if k != "arguments"}, indent=2))
    print(f"results and confusion matrix: {os.path.abspath(args.output_dir)}")
    return results


if __name__ == "__main__":
    main()
