"""The outer loop: train or fine-tune a TTT-ViT with `transformers.Trainer` (the transformers-examples way).

`main()` parses `ModelArguments`, `DataArguments` and `TTTTrainingArguments` (TrainingArguments with a named
recipe's defaults), loads a dataset (`ttt_hf.data`), builds a model from a preset or a
checkpoint, trains, evaluates on the validation and test splits, and saves the model, its image processor,
`all_results.json` and PNG plots (training curves, inner-loop loss per layer). Defaults come from a named recipe
(`ttt_hf.recipes`, `--recipe`); flags given on the command line win. It runs unchanged under
`torchrun --nproc_per_node N` (gloo on CPU, NCCL on GPU) and `accelerate launch`.
"""

import argparse
import dataclasses
import difflib
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
from huggingface_hub import get_token
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from .checkpoints import from_pretrained
from .data import image_info, load_image_dataset
from .device_data import (
    DEVICE_DATA_MAX_BYTES,
    DeviceBatchCollator,
    IndexDataset,
    decode_sources,
    decode_split,
    device_data_plan,
    normalisation_table,
)
from .evaluation import write_sample
from .hub import TRAINING_ARGS_FILE, HubPublishError, check_repo_id, publish
from .metrics import compute_classification_metrics
from .model_sizing import AUTO_MODEL, auto_geometry, preset_geometry
from .modeling import PRESETS, TTTViTConfig, TTTViTForImageClassification, TTTViTImageProcessor
from .plots import plot_inner_losses, plot_training_curves
from .provenance import code_provenance, command_line, device_description
from .recipes import (
    DEFAULT_RECIPE,
    RECIPE_FLAGS,
    RECIPES,
    default,
    epochs_for,
    get_recipe,
    recipe_arguments,
    recipe_defaults,
    recipe_help,
)
from .transforms import EvalTransform, MixupCollator, TrainTransform, collate_images

logger = logging.getLogger("ttt_hf.training")


@dataclass
class ModelArguments:
    preset: str = field(
        default="auto",
        metadata={
            "help": "Model to train from scratch: 'auto' (a small MTTT-MLP ViT sized to the data: the patch size "
            "and image size come from the images) or a named preset (`ttt-hf presets`). Ignored with "
            "--model_name_or_path."
        },
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint (directory or Hub id) to fine-tune instead of a preset."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config fields over the preset, e.g. 'hidden_size=96,num_hidden_layers=4'."},
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "Model input size; default: the preset's, or the dataset's own for small images."},
    )
    ignore_mismatched_sizes: bool = field(
        default=True, metadata={"help": "When fine-tuning on new labels, start a fresh head instead of failing."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub checkpoint's own model code."})


@dataclass
class DataArguments:
    dataset: str = field(
        default="fashion-mnist",
        metadata={
            "help": "Bundled dataset (fashion-mnist, mnist-5k, digits), an imagefolder directory, or a Hub name."
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "Directory of the fashion-mnist IDX files."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of train held out for validation."})
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the validation/test carving and subsets (fixed across training seeds)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a fixed random subset."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on fixed random subsets."})
    check_images: bool = field(
        default=True,
        metadata={"help": "Decode every image of an imagefolder or Hub dataset once before training, so a corrupt "
                  "file stops the run at once, named (off: for very large datasets)."},
    )  # fmt: skip
    skip_corrupt_images: bool = field(
        default=False, metadata={"help": "Leave unreadable images out (counted in a warning) instead of stopping."}
    )
    random_resized_crop: bool = field(
        default=default("random_resized_crop"),
        metadata={"help": "Random-resized crop." + recipe_help("random_resized_crop")},
    )
    crop_min_scale: float = field(
        default=default("crop_min_scale"),
        metadata={"help": "Smallest crop area fraction." + recipe_help("crop_min_scale")},
    )
    horizontal_flip: bool = field(
        default=default("horizontal_flip"),
        metadata={"help": "Random horizontal flips." + recipe_help("horizontal_flip")},
    )
    rand_augment: bool = field(
        default=default("rand_augment"),
        metadata={"help": "RandAugment(2, 10), big_vision's." + recipe_help("rand_augment")},
    )
    mixup_alpha: float = field(
        default=default("mixup_alpha"),
        metadata={"help": "Mixup Beta(alpha, alpha); 0: off." + recipe_help("mixup_alpha")},
    )
    eval_crop_fraction: float = field(
        default=default("eval_crop_fraction"),
        metadata={"help": "Evaluation centre-crop fraction (1.0: plain resize)." + recipe_help("eval_crop_fraction")},
    )
    device_data: bool = field(
        default=True,
        metadata={"help": "Hold the splits as uint8 tensors on the training device and crop, flip and normalise whole "
                  f"batches there, where that applies (not with RandAugment; splits up to "
                  f"{DEVICE_DATA_MAX_BYTES / 2**30:g} GiB decoded); false: "
                  "augment image by image with PIL in the data loader."},
    )  # fmt: skip


def _recipe_field(flag: str, help_: str):
    return field(default=default(flag), metadata={"help": help_ + recipe_help(flag)})


@dataclass
class TTTTrainingArguments(TrainingArguments):
    """TrainingArguments whose optimiser, schedule, batch and epoch defaults come from a named recipe
    (`ttt_hf.recipes`): `parse_arguments` puts the chosen recipe's values before the user's flags, and the
    dataclass defaults are the default recipe's, except two that depend on the run: `global_batch_size` and a
    `num_train_epochs` of None are resolved by `ImageClassificationTrainer` (over the processes, and from the
    training set's size)."""

    recipe: str = field(
        default=DEFAULT_RECIPE,
        metadata={"help": "Training recipe: the defaults of every flag marked with recipe values. "
                  + "; ".join(f"{name}: {recipe.description}" for name, recipe in RECIPES.items()) + "."},
    )  # fmt: skip
    output_dir: str | None = field(default="outputs/ttt-vit", metadata={"help": "Where checkpoints and results go."})
    learning_rate: float = _recipe_field("learning_rate", "Peak learning rate.")
    weight_decay: float = _recipe_field("weight_decay", "AdamW (decoupled) weight decay, multiplied by the lr.")
    weight_decay_mask: str = _recipe_field(
        "weight_decay_mask", "Which parameters decay: 'kernels' (the official mask: weight matrices only) or "
        "'transformers' (Trainer's: all but LayerNorm weights and biases)."
    )  # fmt: skip
    adam_beta1: float = _recipe_field("adam_beta1", "Adam beta1.")
    adam_beta2: float = _recipe_field("adam_beta2", "Adam beta2.")
    adam_epsilon: float = _recipe_field("adam_epsilon", "Adam epsilon.")
    lr_scheduler_type: str = _recipe_field("lr_scheduler_type", "Schedule after warm-up.")
    warmup_steps: float = _recipe_field("warmup_steps", "Linear warm-up steps, or a fraction of all steps if < 1.")
    max_grad_norm: float = _recipe_field("max_grad_norm", "Gradient clipping norm.")
    num_train_epochs: float | None = _recipe_field("num_train_epochs", "Epochs.")
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Training batch over all processes and accumulation steps; sets "
                  "--per_device_train_batch_size (which, if given, wins)." + recipe_help("global_batch_size")},
    )  # fmt: skip
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on the validation split."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save checkpoints."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints to keep."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep `image` for the on-the-fly transforms."}
    )
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    dataloader_pin_memory: bool = field(
        default=torch.cuda.is_available(), metadata={"help": "Pin host memory (useful only with a GPU)."}
    )
    plots: bool = field(default=True, metadata={"help": "Write training_curves.png and inner_losses.png."})
    time_budget_s: float | None = field(
        default=None,
        metadata={"help": "Stop training after this many seconds (then evaluate and save as usual): a run that must "
                  "end within a fixed device time. all_results.json records the epochs done."},
    )  # fmt: skip

    def __post_init__(self):
        get_recipe(self.recipe)
        if self.weight_decay_mask not in ("kernels", "transformers"):
            raise ValueError(
                f"--weight_decay_mask must be 'kernels' or 'transformers', got {self.weight_decay_mask!r}."
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # Several processes on a machine without a GPU: without use_cpu, accelerate starts the process group
            # but runs every process as a single one (each sees all data, metrics come out wrong).
            self.use_cpu = True
            self.ddp_backend = self.ddp_backend or "gloo"
        super().__post_init__()

    def resolve_batch_size(self) -> None:
        """Per-device batch from `global_batch_size`, over this run's processes and accumulation steps."""
        if self.global_batch_size is None:
            return
        shares = self.world_size * self.gradient_accumulation_steps
        if self.global_batch_size % shares:
            raise ValueError(
                f"--global_batch_size {self.global_batch_size} does not split over {self.world_size} process(es) x "
                f"{self.gradient_accumulation_steps} accumulation step(s): give a multiple of {shares}, or "
                "--per_device_train_batch_size."
            )
        self.per_device_train_batch_size = self.global_batch_size // shares


class ImageClassificationTrainer(Trainer):
    """Trainer that evaluates with a plain collator, so batch-level training augmentation (mixup) never
    touches validation or test batches."""

    def __init__(self, model=None, args=None, *rest, eval_data_collator=collate_images, **kwargs):
        if isinstance(args, TTTTrainingArguments):  # what depends on the run: processes and dataset size
            args.resolve_batch_size()
            train_dataset = kwargs.get("train_dataset")
            if args.num_train_epochs is None and train_dataset is not None:
                args.num_train_epochs = epochs_for(len(train_dataset))
        super().__init__(model, args, *rest, **kwargs)
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

    def evaluation_loop(self, *args, **kwargs):
        """As Trainer's, but `<prefix>_loss` is the cross-entropy over exactly the dataset's images. Trainer averages
        per-batch losses, which under several processes counts the images that pad the last batches twice; the
        gathered logits and labels (what the accuracies use) have no padding."""
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        labels = output.label_ids
        class_indices = isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu"
        if class_indices and self.label_smoother is None and f"{prefix}_loss" in output.metrics:
            output.metrics[f"{prefix}_loss"] = cross_entropy(output.predictions, output.label_ids)
        return output

    def get_decay_parameter_names(self, model) -> list[str]:
        """The official weight-decay mask (weight matrices only; `--weight_decay_mask kernels`) where the model
        defines it, else Trainer's (all but LayerNorm weights and biases)."""
        if self.args.weight_decay_mask == "kernels" and hasattr(model, "decay_parameter_names"):
            return model.decay_parameter_names()
        return super().get_decay_parameter_names(model)


def cross_entropy(logits, labels) -> float:
    """Mean cross-entropy of logits [N, C] against class indices [N] (float64, labels -100 ignored)."""
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels != -100
    logits, labels = logits[keep], labels[keep]
    top = logits.max(-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
    return float((log_z - logits[np.arange(len(labels)), labels]).mean())


class LogLastStep(TrainerCallback):
    """Log at the last step too, so Trainer gathers the loss of the steps since the last log over all processes:
    otherwise its `train_loss` adds that remainder from the main process alone."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True


class PerProcessSeed(TrainerCallback):
    """Give every process its own random stream once training starts (the model is already built and the same
    everywhere), as the official code folds the device index into its rng: shuffled inner batching then draws a
    different token order on each device. A resumed run restores each process's saved stream."""

    def on_train_begin(self, args, state, control, **kwargs):
        if args.world_size > 1:
            torch.manual_seed(args.seed + 1_000_003 * args.process_index)


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


class StepTimer(TrainerCallback):
    """Steady training speed: the median wall time between consecutive optimiser steps (evaluations and checkpoints
    fall between a few steps only, so the median ignores them) as images per second over all processes. With
    `budget_s`, training stops once that many seconds have passed since the first step began."""

    def __init__(self, budget_s: float | None = None):
        self.budget_s, self.times, self.stopped = budget_s, [], False

    def on_train_begin(self, args, state, control, **kwargs):
        self.times = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())
        if self.budget_s is None:
            return
        over = torch.tensor(float(self.times[-1] - self.times[0] > self.budget_s))
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # every process stops at once
            over = over.to(args.device)
            torch.distributed.all_reduce(over, op=torch.distributed.ReduceOp.MAX)
        if over.item():
            control.should_training_stop = self.stopped = True

    def metrics(self, images_per_step: int) -> dict:
        steps = [b - a for a, b in zip(self.times[1:], self.times[2:])]  # the first step pays for warm-up
        found = {"stopped_by_time_budget": self.stopped} if self.budget_s is not None else {}
        if steps:
            found["steady_train_images_per_second"] = images_per_step / statistics.median(steps)
        return found


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


def check_override_keys(overrides: dict, config_class: type) -> None:
    """Refuse a key that is not a field of `config_class` (a config would keep it silently), naming the closest."""
    fields = [f.name for f in dataclasses.fields(config_class)]
    settable = set(fields) - {"id2label", "label2id", "transformers_version", "architectures"}
    for key in overrides:
        if key not in settable:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            labels = " (labels come from the dataset)" if key in ("num_labels", "id2label", "label2id") else ""
            raise ValueError(
                f"--config_overrides: {key!r} is not a field of {config_class.__name__}{labels}.{hint} Fields: "
                f"{', '.join(sorted(settable))}."
            )


def build_model(model_args: ModelArguments, data_args: DataArguments, class_names: list[str], info):
    """A new model from a preset (sized to the data) or a checkpoint with a head for these labels."""
    labels = dict(id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)})
    overrides = parse_overrides(model_args.config_overrides)
    if model_args.model_name_or_path:
        config = from_pretrained(
            AutoConfig, model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code
        )
        check_override_keys(overrides, type(config))
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code,
            num_labels=len(class_names), **labels, **overrides,
        )  # fmt: skip
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            trust_remote_code=model_args.trust_remote_code,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        )
    else:
        check_override_keys(overrides, TTTViTConfig)
        if model_args.preset == "auto":
            size = model_args.image_size or overrides.get("image_size")
            fields = {**PRESETS["ttt-vit-tiny16-mlp"], **AUTO_MODEL, **auto_geometry(info, size)}
        elif model_args.preset in PRESETS:
            fields = {**PRESETS[model_args.preset], **overrides}
            fields.update(preset_geometry(info, fields, model_args.image_size or overrides.get("image_size")))
        else:
            raise ValueError(
                f"Unknown preset {model_args.preset!r}: use 'auto' or one of {', '.join(sorted(PRESETS))}."
            )
        fields = {**fields, **overrides, "num_channels": overrides.get("num_channels", info.num_channels)}
        config = TTTViTConfig(**fields, num_labels=len(class_names), **labels)
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


def device_resident(data, processor, image_size: int, data_args, training_args, mixup):
    """(train, validation, test datasets of indices, training collator, evaluation collator) of the device-resident
    path (`ttt_hf.device_data`): the three splits decoded once into one uint8 tensor on the training device, and the
    training split at its own resolution too when the recipe crops."""
    device = training_args.device
    decoded = [
        decode_split(data[name], processor, desc=f"decoding {name}") for name in ("train", "validation", "test")
    ]
    images = torch.cat([images for images, _ in decoded]).to(device)  # [N, C, S, S] uint8, train first
    labels = torch.cat([labels for _, labels in decoded])
    starts = np.cumsum([0] + [len(labels) for _, labels in decoded])
    sets = [IndexDataset(int(stop - start), offset=int(start)) for start, stop in zip(starts[:-1], starts[1:])]
    sources = decode_sources(data["train"], processor).to(device) if data_args.random_resized_crop else None
    table = normalisation_table(processor)
    train_collator = DeviceBatchCollator(
        images, labels, table, image_size, sources=sources,
        random_resized_crop=data_args.random_resized_crop, scale=(data_args.crop_min_scale, 1.0),
        horizontal_flip=data_args.horizontal_flip, seed=training_args.seed, mixup=mixup,
    )  # fmt: skip
    eval_collator = DeviceBatchCollator(images, labels, table, image_size)
    if training_args.dataloader_num_workers or training_args.dataloader_pin_memory:
        logger.info("device-resident data: the batches are built in the main process from device memory "
                    "(dataloader_num_workers 0, no pinned memory)")  # fmt: skip
    training_args.dataloader_num_workers, training_args.dataloader_pin_memory = 0, False
    training_args.dataloader_prefetch_factor, training_args.dataloader_persistent_workers = None, False
    return (*sets, train_collator, eval_collator)


def inner_losses_on(model, pixel_values: torch.Tensor) -> np.ndarray | None:
    """Mean inner-loop loss [layers, T + 1] at W_0 .. W_T on a batch, or None for attention mixers."""
    model.eval()
    with torch.no_grad():
        out = model(pixel_values.to(model.device, model.dtype), output_inner_losses=True)
    if not out.inner_losses:
        return None
    return torch.stack([loss.float().mean((0, 1)) for loss in out.inner_losses]).cpu().numpy()


def run(model_args: ModelArguments, data_args: DataArguments, training_args: TTTTrainingArguments) -> dict:
    """Train and evaluate; returns the metrics written to `all_results.json`. With --push_to_hub, the saved run is
    published by `ttt_hf.hub.publish` (this card, the model code and the processor) instead of Trainer's push."""
    transformers.set_seed(training_args.seed)
    push, training_args.push_to_hub = training_args.push_to_hub, False
    if push:  # fail before training, not after it
        repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
        check_repo_id(repo_id)
        if not (training_args.hub_token or get_token()):
            raise HubPublishError("--push_to_hub: no Hugging Face token: log in with `hf auth login` or set HF_TOKEN.")
    data = load_image_dataset(
        data_args.dataset,
        data_dir=data_args.data_dir,
        validation_fraction=data_args.validation_fraction,
        seed=data_args.split_seed,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        check_images=data_args.check_images,
        skip_corrupt_images=data_args.skip_corrupt_images,
    )
    class_names = data["train"].features["label"].names
    info = image_info(data)
    model, processor = build_model(model_args, data_args, class_names, info)
    mixup = (
        MixupCollator(len(class_names), data_args.mixup_alpha, seed=training_args.seed)
        if data_args.mixup_alpha > 0
        else None
    )
    plan = device_data_plan(
        data_args.device_data,
        data,
        model.config.image_size,
        model.config.num_channels,
        data_args.rand_augment,
        crop=data_args.random_resized_crop,
    )
    if plan.applies:
        train_set, eval_set, test_set, collator, eval_collator = device_resident(
            data, processor, model.config.image_size, data_args, training_args, mixup
        )
        train_transform = collator
    else:
        train_transform = TrainTransform(
            processor,
            random_resized_crop=data_args.random_resized_crop,
            scale=(data_args.crop_min_scale, 1.0),
            horizontal_flip=data_args.horizontal_flip,
            rand_augment=data_args.rand_augment,
            seed=training_args.seed,
        )
        train_set = data["train"].with_transform(train_transform)
        eval_set = data["validation"].with_transform(EvalTransform(processor))
        test_set = data["test"].with_transform(EvalTransform(processor))
        collator, eval_collator = mixup or collate_images, collate_images
    data_path = "device-resident" if plan.applies else "per image"
    logger.info("data path: %s (%s)", data_path, plan.reason)
    trainer = ImageClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        eval_data_collator=eval_collator,
        compute_metrics=compute_classification_metrics,
        processing_class=processor,
        callbacks=[
            SetEpochCallback(train_transform, mixup),
            LogLastStep(),
            PerProcessSeed(),
            timer := EpochTimer(),
            step_timer := StepTimer(training_args.time_budget_s),
        ],
    )
    logger.info(
        "%s: %d train / %d validation / %d test images of %dx%d %s; model %s, %.2fM parameters, %d tokens "
        "(%dx%d input, %dx%d patches); recipe %s, %g epochs, batch %d x %d process(es)",
        data_args.dataset, len(data["train"]), len(data["validation"]), len(data["test"]), info.height, info.width,
        info.mode, model.config.mixer, model.num_parameters() / 1e6, model.config.num_tokens,
        model.config.image_size, model.config.image_size, model.config.patch_size, model.config.patch_size,
        training_args.recipe, training_args.num_train_epochs, training_args.per_device_train_batch_size,
        training_args.world_size,
    )  # fmt: skip
    resume = training_args.resume_from_checkpoint
    if resume in ("last", "true", "True"):  # the newest checkpoint in output_dir
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            raise FileNotFoundError(f"--resume_from_checkpoint last: no checkpoint in {training_args.output_dir}.")
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    images_per_step = (
        training_args.train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    )
    metrics = {**train_result.metrics, **timer.metrics(), **step_timer.metrics(images_per_step)}
    metrics.update(trainer.evaluate(eval_set, metric_key_prefix="eval"))
    metrics.update(trainer.evaluate(test_set, metric_key_prefix="test"))
    metrics["data_path"] = data_path
    metrics["planned_epochs"] = training_args.num_train_epochs if training_args.max_steps <= 0 else None
    metrics["num_parameters"] = model.num_parameters()
    metrics["recipe"] = training_args.recipe
    metrics["settings"] = {  # what this run used: the recipe's values and the flags given over them
        flag: getattr(data_args if hasattr(data_args, flag) else training_args, flag) for flag in RECIPE_FLAGS
    } | {"per_device_train_batch_size": training_args.per_device_train_batch_size,
         "world_size": training_args.world_size}  # fmt: skip
    command = getattr(training_args, "command", None)  # set by parse_arguments
    metrics["command"] = command_line(command) if command is not None else None
    metrics["device"] = device_description(training_args)
    if trainer.is_world_process_zero():
        first = data["test"][0]  # the card's usage example classifies it
        metrics["sample"] = write_sample(training_args.output_dir, first["image"], class_names[first["label"]])
        trainer.save_metrics("all", metrics)
        trainer.save_state()
        if training_args.plots:
            plot_training_curves(
                trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png")
            )
            probe = eval_collator([test_set[i] for i in range(min(32, len(test_set)))])["pixel_values"]
            losses = inner_losses_on(model, probe)
            if losses is not None:
                plot_inner_losses(
                    losses,
                    os.path.join(training_args.output_dir, "inner_losses.png"),
                    title=f"inner loss per layer ({model.config.mixer}, {len(probe)} test images)",
                )
                metrics["inner_loss_before"] = float(losses[:, 0].mean())
                metrics["inner_loss_after"] = float(losses[:, -1].mean())
                trainer.save_metrics("all", metrics)
        arguments = {
            "model": dataclasses.asdict(model_args),
            "data": dataclasses.asdict(data_args),
            "training": {**training_args.to_dict(), "push_to_hub": push},
            "code": code_provenance(),
        }  # to_dict masks the tokens
        with open(os.path.join(training_args.output_dir, TRAINING_ARGS_FILE), "w") as file:
            json.dump(arguments, file, indent=2, default=str)
        if push:
            try:
                published = publish(
                    training_args.output_dir,
                    repo_id,
                    token=training_args.hub_token,
                    private=bool(training_args.hub_private_repo),
                    revision=training_args.hub_revision,
                )
            except HubPublishError as error:
                raise HubPublishError(
                    f"{error} The run is saved in {training_args.output_dir}: publish it with "
                    f"`ttt-hf publish {training_args.output_dir} {repo_id}`."
                ) from None
            logger.info("published to %s: %s", published.repo_id, published.url)
    return metrics


def _recipe_in(argv: list[str]) -> str:
    pick = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pick.add_argument("--recipe", default=DEFAULT_RECIPE)
    return pick.parse_known_args(argv)[0].recipe


def argument_parser() -> HfArgumentParser:
    # no abbreviations: `--reci` would reach the dataclasses but not the recipe lookup
    return HfArgumentParser((ModelArguments, DataArguments, TTTTrainingArguments), allow_abbrev=False)


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, TTTTrainingArguments]:
    """Flags (or one JSON file of them) over the chosen recipe's values: the recipe's flags go first, so every
    flag the user gives wins."""
    parser = argument_parser()
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:
            given = json.load(file)
        recipe = recipe_defaults(given.get("recipe", DEFAULT_RECIPE), set(given))
        model_args, data_args, training_args = parser.parse_dict({**recipe, **given})
    else:
        given = {token[2:].split("=", 1)[0].replace("-", "_") for token in argv if token.startswith("--")}
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(
            args=[*recipe_arguments(_recipe_in(argv), given), *argv]
        )
    training_args.command = list(argv)
    return model_args, data_args, training_args


class _StdoutHandler(logging.StreamHandler):
    """A handler that writes to whatever `sys.stdout` is when it logs (a caller may have replaced it since)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property always answers sys.stdout
        pass


def setup_logging(training_args: TrainingArguments) -> None:
    """ttt_hf's log lines on stdout, through one handler of its own (nothing on the root logger, so libraries
    with their own handlers, huggingface_hub's among them, are not printed twice)."""
    package = logging.getLogger("ttt_hf")
    if not any(isinstance(handler, _StdoutHandler) for handler in package.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
        package.propagate = False
    package.setLevel(logging.INFO if training_args.should_log else logging.WARNING)


def summary(metrics: dict, output_dir: str) -> str:
    """The end of a run in two lines: validation and test top-1/top-k, and where the model is."""
    scores = []
    for name, prefix in (("validation", "eval"), ("test", "test")):
        if f"{prefix}_accuracy" in metrics:
            top_k = next(
                (key for key in metrics if key.startswith(f"{prefix}_top") and key.endswith("_accuracy")), None
            )
            k_part = f", top-{top_k[len(prefix) + 4 : -9]} {metrics[top_k]:.4f}" if top_k else ""
            scores.append(f"{name} top-1 {metrics[f'{prefix}_accuracy']:.4f}{k_part}")
    return f"{'   '.join(scores)}\nmodel, image processor and all_results.json: {os.path.abspath(output_dir)}"


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    setup_logging(training_args)
    metrics = run(model_args, data_args, training_args)
    if training_args.process_index == 0:
        print(summary(metrics, training_args.output_dir), flush=True)
    return metrics


if __name__ == "__main__":
    main()
