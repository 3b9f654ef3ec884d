"""The outer loop: train or fine-tune a TTT-ViT with `transformers.Trainer` (the transformers-examples way).

`main()` parses `ModelArguments`, `DataArguments` and `TTTTrainingArguments` (TrainingArguments with the
paper's recipe as defaults), loads a dataset (`ttt_hf.data`), builds a model from a preset or a
checkpoint, trains, evaluates on the validation and test splits, and saves the model, its image processor,
`all_results.json` and PNG plots (training curves, inner-loop loss per layer). It runs unchanged under
`torchrun --nproc_per_node N` (gloo on CPU, NCCL on GPU) and `accelerate launch`.
"""

import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from .data import image_info, load_image_dataset
from .metrics import compute_classification_metrics
from .modeling import TTTViTConfig, TTTViTForImageClassification, TTTViTImageProcessor
from .plots import plot_inner_losses, plot_training_curves
from .transforms import EvalTransform, MixupCollator, TrainTransform, collate_images

logger = logging.getLogger("ttt_hf.training")


@dataclass
class ModelArguments:
    preset: str = field(
        default="ttt-vit-tiny16-mlp",
        metadata={"help": "Model to train from scratch (`TTTViTConfig.presets()`); ignored with --model_name_or_path."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint (directory or Hub id) to fine-tune instead of a preset."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config fields over the preset, e.g. 'hidden_size=96,num_hidden_layers=4'."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Model input size; default: the preset's, or the dataset's own for small images."}
    )
    ignore_mismatched_sizes: bool = field(
        default=True, metadata={"help": "When fine-tuning on new labels, start a fresh head instead of failing."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub checkpoint's own model code."})


@dataclass
class DataArguments:
    dataset: str = field(
        default="fashion-mnist",
        metadata={"help": "Bundled dataset (fashion-mnist, mnist-5k, digits), an imagefolder directory, or a Hub name."},
    )
    data_dir: str | None = field(default=None, metadata={"help": "Directory of the fashion-mnist IDX files."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of train held out for validation."})
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the validation/test carving and subsets (fixed across training seeds)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a fixed random subset."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on fixed random subsets."})
    random_resized_crop: bool = field(default=True, metadata={"help": "Random-resized crop (paper: on)."})
    crop_min_scale: float = field(default=0.05, metadata={"help": "Smallest crop area fraction (paper: 0.05)."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips (paper: on for patches)."})
    rand_augment: bool = field(default=True, metadata={"help": "RandAugment(2, 10) (paper: on for patches)."})
    mixup_alpha: float = field(default=0.2, metadata={"help": "Mixup Beta(alpha, alpha); 0 switches it off."})
    eval_crop_fraction: float = field(
        default=224 / 256, metadata={"help": "Evaluation centre-crop fraction (paper 224/256; 1.0: plain resize)."}
    )


@dataclass
class TTTTrainingArguments(TrainingArguments):
    """TrainingArguments with the paper's recipe as defaults (MTTT.md): AdamW lr 1e-3, weight decay 0.1
    (= decoupled 1e-4 at lr 1e-3), ~10 % linear warm-up then cosine, gradient clipping 1.0."""

    output_dir: str | None = field(default="outputs/ttt-vit", metadata={"help": "Where checkpoints and results go."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW (decoupled) weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule after warm-up."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps, or a fraction of all steps if < 1."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on the validation split."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save checkpoints."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints to keep."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep `image` for the on-the-fly transforms."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    dataloader_pin_memory: bool = field(
        default=torch.cuda.is_available(), metadata={"help": "Pin host memory (useful only with a GPU)."}
    )
    plots: bool = field(default=True, metadata={"help": "Write training_curves.png and inner_losses.png."})


class ImageClassificationTrainer(Trainer):
    """Trainer that evaluates with a plain collator, so batch-level training augmentation (mixup) never
    touches validation or test batches."""

    def __init__(self, *args, eval_data_collator=collate_images, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator

    def _with_eval_collator(self, build, *args):
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return build(*args)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)


class EpochTimer(TrainerCallback):
    """Wall time of each epoch's training steps (the epoch-end evaluation comes after `on_epoch_end`)."""

    def __init__(self):
        self.durations, self._start = [], None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._start)

    def metrics(self) -> dict:
        """Median epoch time after the first (which pays for torch.compile and warm-up), and the first."""
        if not self.durations:
            return {}
        steady = self.durations[1:] or self.durations
        return {"epoch_seconds": statistics.median(steady), "first_epoch_seconds": self.durations[0]}


class SetEpochCallback(TrainerCallback):
    """Tell randomised transforms the epoch (as Trainer tells samplers), so their draws change every epoch and
    a resumed run (state.epoch restored from the checkpoint) continues with the same draws."""

    def __init__(self, *transforms):
        self.transforms = [t for t in transforms if hasattr(t, "set_epoch")]

    def on_epoch_begin(self, args, state, control, **kwargs):
        for transform in self.transforms:
            transform.set_epoch(int(state.epoch + 1e-6))  # state.epoch is fractional when resuming mid-epoch


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=x,c=[1,2]' -> {'a': 1, 'b': 'x', 'c': [1, 2]} (values read as JSON when they parse)."""
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        if "=" not in item:
            raise ValueError(f"--config_overrides expects key=value pairs separated by commas, got {item!r}.")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def build_model(model_args: ModelArguments, data_args: DataArguments, class_names: list[str], info):
    """A new model from a preset (sized to the data) or a checkpoint with a head for these labels."""
    labels = dict(id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)})
    overrides = parse_overrides(model_args.config_overrides)
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code,
            num_labels=len(class_names), **labels, **overrides,
        )
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path, config=config, trust_remote_code=model_args.trust_remote_code,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        )
    else:
        if model_args.image_size is not None:
            overrides.setdefault("image_size", model_args.image_size)
        elif max(info.height, info.width) < 64:  # small datasets train at their own resolution
            overrides.setdefault("image_size", max(info.height, info.width))
        overrides.setdefault("num_channels", info.num_channels)
        config = TTTViTConfig.from_preset(model_args.preset, num_labels=len(class_names), **labels, **overrides)
        model = TTTViTForImageClassification(config)
    if model.config.num_channels != info.num_channels and info.num_channels == 3:
        raise ValueError(
            f"The dataset has colour images but the model expects {model.config.num_channels} channel(s) "
            "(`num_channels`): fine-tune a colour checkpoint, or convert the images to grey."
        )
    processor = TTTViTImageProcessor.for_image_size(
        model.config.image_size, model.config.num_channels, crop_fraction=data_args.eval_crop_fraction
    )
    return model, processor


def inner_losses_on(model, pixel_values: torch.Tensor) -> np.ndarray | None:
    """Mean inner-loop loss [layers, T + 1] at W_0 .. W_T on a batch, or None for attention mixers."""
    model.eval()
    with torch.no_grad():
        out = model(pixel_values.to(model.device, model.dtype), output_inner_losses=True)
    if not out.inner_losses:
        return None
    return torch.stack([loss.float().mean((0, 1)) for loss in out.inner_losses]).cpu().numpy()


def run(model_args: ModelArguments, data_args: DataArguments, training_args: TTTTrainingArguments) -> dict:
    """Train and evaluate; returns the metrics written to `all_results.json`."""
    transformers.set_seed(training_args.seed)
    data = load_image_dataset(
        data_args.dataset, data_dir=data_args.data_dir, validation_fraction=data_args.validation_fraction,
        seed=data_args.split_seed, max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
    )
    class_names = data["train"].features["label"].names
    info = image_info(data)
    model, processor = build_model(model_args, data_args, class_names, info)
    logger.info(
        "%s: %d train / %d validation / %d test images of %dx%d %s; model %s, %.2fM parameters, %d tokens",
        data_args.dataset, len(data["train"]), len(data["validation"]), len(data["test"]), info.height, info.width,
        info.mode, model.config.mixer, model.num_parameters() / 1e6, model.config.num_tokens,
    )
    train_transform = TrainTransform(
        processor, random_resized_crop=data_args.random_resized_crop, scale=(data_args.crop_min_scale, 1.0),
        horizontal_flip=data_args.horizontal_flip, rand_augment=data_args.rand_augment, seed=training_args.seed,
    )
    train_set = data["train"].with_transform(train_transform)
    eval_set = data["validation"].with_transform(EvalTransform(processor))
    test_set = data["test"].with_transform(EvalTransform(processor))
    collator = (
        MixupCollator(len(class_names), data_args.mixup_alpha, seed=training_args.seed)
        if data_args.mixup_alpha > 0 else collate_images
    )
    trainer = ImageClassificationTrainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=collator, compute_metrics=compute_classification_metrics, processing_class=processor,
        callbacks=[SetEpochCallback(train_transform, collator), timer := EpochTimer()],
    )
    resume = training_args.resume_from_checkpoint
    if resume in ("last", "true", "True"):  # the newest checkpoint in output_dir
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            raise FileNotFoundError(f"--resume_from_checkpoint last: no checkpoint in {training_args.output_dir}.")
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    metrics = {**train_result.metrics, **timer.metrics()}
    metrics.update(trainer.evaluate(eval_set, metric_key_prefix="eval"))
    metrics.update(trainer.evaluate(test_set, metric_key_prefix="test"))
    metrics["num_parameters"] = model.num_parameters()
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
        trainer.save_state()
        if training_args.plots:
            plot_training_curves(trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png"))
            probe = collate_images([test_set[i] for i in range(min(32, len(test_set)))])["pixel_values"]
            losses = inner_losses_on(model, probe)
            if losses is not None:
                plot_inner_losses(losses, os.path.join(training_args.output_dir, "inner_losses.png"),
                                  title=f"inner loss per layer ({model.config.mixer}, {len(probe)} test images)")
                metrics["inner_loss_before"] = float(losses[:, 0].mean())
                metrics["inner_loss_after"] = float(losses[:, -1].mean())
                trainer.save_metrics("all", metrics)
    return metrics


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, TTTTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if not training_args.should_log:
        logger.setLevel(logging.WARNING)
    return run(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
