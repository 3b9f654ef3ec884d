"""The flags of `ttt-hf train`: `ModelArguments`, `DataArguments` and `TTTTrainingArguments` (TrainingArguments with a
named recipe's defaults, `--recipe`; flags given on the command line win), and how a command line becomes them."""

import argparse
import json
import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import (
    HfArgumentParser,
    TrainingArguments,
)

from .device_data import (
    DEVICE_DATA_MAX_BYTES,
)
from .recipes import (
    DEFAULT_RECIPE,
    RECIPES,
    default,
    get_recipe,
    recipe_arguments,
    recipe_defaults,
    recipe_help,
)

logger = logging.getLogger("ttt_hf.vision.training")


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
    (`ttt_hf.vision.recipes`): `parse_arguments` puts the chosen recipe's values before the user's flags, and the
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
