"""Training recipes: named sets of optimiser, schedule, batch, epoch and augmentation settings.

`paper-patch` and `paper-pixel` are the official MTTT ImageNet configs (github test-time-training/mttt,
config_patch.py and config_pixel.py, with train.py and tools/build_optax.py): Adam (0.9, 0.999, 1e-8) at lr 1e-3
on a global batch of 1,024 for 90 epochs, 10,000 linear warm-up steps then cosine to 0, gradient clipping 1.0, and
decoupled weight decay 1e-4 x schedule on kernels only (`.*/kernel$`). torch's AdamW decays by lr_t x
weight_decay, so weight_decay 0.1 at lr 1e-3 is exactly that decay (change the lr and the decay changes with it).
Patches train with inception crop (5-100 % of the area), flips, RandAugment(2, 10) and mixup 0.2; pixels with the
crop alone. Evaluation resizes the short side to 256/224 of the input and centre-crops. One difference is left:
the official Adam keeps its first moment in bfloat16 (`mu_dtype`), torch's in float32.

`small-data` is the default: a recipe that trains the small bundled datasets (and small imagefolders) well on a
CPU in minutes — a larger lr on small batches, a short warm-up, mild zoom crops, none of the heavy ImageNet
regularisers (no flips, which would turn digits into other digits, no RandAugment, no mixup), and as many epochs
as it takes to see about 120,000 images (10 to 60).

A recipe only sets defaults: any flag given on the command line wins over it.
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    """Every setting a recipe fixes; the field names are the training flags they set."""

    description: str
    learning_rate: float
    weight_decay: float
    weight_decay_mask: str  # "kernels" (the official mask) or "transformers" (Trainer's: all but norms and biases)
    adam_beta1: float
    adam_beta2: float
    adam_epsilon: float
    lr_scheduler_type: str
    warmup_steps: float  # steps, or a fraction of all steps if < 1
    max_grad_norm: float
    global_batch_size: int  # over all processes and accumulation steps
    num_train_epochs: float | None  # None: from the data size (`epochs_for`)
    random_resized_crop: bool
    crop_min_scale: float
    horizontal_flip: bool
    rand_augment: bool
    mixup_alpha: float
    eval_crop_fraction: float

    def settings(self) -> dict:
        """The flags this recipe sets, name -> value."""
        return {name: value for name, value in asdict(self).items() if name != "description"}


_PAPER = dict(
    learning_rate=1e-3, weight_decay=0.1, weight_decay_mask="kernels", adam_beta1=0.9, adam_beta2=0.999,
    adam_epsilon=1e-8, lr_scheduler_type="cosine", warmup_steps=10_000, max_grad_norm=1.0, global_batch_size=1024,
    num_train_epochs=90, random_resized_crop=True, crop_min_scale=0.05, eval_crop_fraction=224 / 256,
)  # fmt: skip

RECIPES: dict[str, Recipe] = {
    "small-data": Recipe(
        description="the default: small datasets on a CPU in minutes (mild zoom crops, no flips/RandAugment/mixup)",
        learning_rate=2e-3, weight_decay=0.05, weight_decay_mask="kernels", adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, lr_scheduler_type="cosine", warmup_steps=0.05, max_grad_norm=1.0, global_batch_size=64,
        num_train_epochs=None, random_resized_crop=True, crop_min_scale=0.8, horizontal_flip=False,
        rand_augment=False, mixup_alpha=0.0, eval_crop_fraction=1.0,
    ),
    "paper-patch": Recipe(
        description="the official ImageNet patch config (config_patch.py): flips, RandAugment(2, 10), mixup 0.2",
        horizontal_flip=True, rand_augment=True, mixup_alpha=0.2, **_PAPER,
    ),
    "paper-pixel": Recipe(
        description="the official ImageNet pixel config (config_pixel.py): inception crop only",
        horizontal_flip=False, rand_augment=False, mixup_alpha=0.0, **_PAPER,
    ),
}  # fmt: skip
DEFAULT_RECIPE = "small-data"
RECIPE_FLAGS = tuple(RECIPES[DEFAULT_RECIPE].settings())


# `small-data` trains for as many epochs as it takes to see about this many images, within these bounds: 60 epochs of
# the 1,437 digits, 30 of mnist-5k's 4,000 images, 10 of Fashion-MNIST's 54,000. mnist-5k's test top-1 at 20 / 25 / 30
# epochs: 94.8 / 95.8 / - % at seed 0, - / 94.2 / 96.2 % at seed 42: 30 keep the main job at 95 % or more in minutes.
SEEN_IMAGES, MIN_EPOCHS, MAX_EPOCHS = 120_000, 10, 60


def epochs_for(num_train_images: int) -> int:
    """Epochs of a recipe without a fixed number: about SEEN_IMAGES images, MIN_EPOCHS to MAX_EPOCHS epochs."""
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(SEEN_IMAGES / max(1, num_train_images)))))


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose from {', '.join(RECIPES)}.")
    return RECIPES[name]


def default(flag: str):
    """The default recipe's value of `flag` (the dataclass default of that training flag)."""
    return getattr(RECIPES[DEFAULT_RECIPE], flag)


def recipe_help(flag: str) -> str:
    """' (small-data: 0.002, paper-patch: 0.001, ...)': what every recipe sets `flag` to, for --help."""
    values = {name: getattr(recipe, flag) for name, recipe in RECIPES.items()}
    return (
        " ("
        + ", ".join(f"{name}: {'from the data size' if v is None else repr(v)}" for name, v in values.items())
        + ")"
    )


def recipe_defaults(name: str, given: set[str]) -> dict:
    """The recipe's flag values the user did not give (theirs win): without the global batch size when the user
    chose a per-device one, and without values the recipe leaves to the data (None). Giving both batch flags is
    refused: they would contradict each other."""
    if {"per_device_train_batch_size", "global_batch_size"} <= given:
        raise ValueError("Give --global_batch_size or --per_device_train_batch_size, not both.")
    skip = set(given) | ({"global_batch_size"} if "per_device_train_batch_size" in given else set())
    return {
        flag: value for flag, value in get_recipe(name).settings().items() if flag not in skip and value is not None
    }


def recipe_arguments(name: str, given: set[str]) -> list[str]:
    """`recipe_defaults` as command-line flags."""
    return [
        part
        for flag, value in recipe_defaults(name, given).items()
        for part in (f"--{flag}", str(value).lower() if isinstance(value, bool) else str(value))
    ]


__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "RECIPE_FLAGS",
    "Recipe",
    "epochs_for",
    "get_recipe",
    "recipe_arguments",
    "recipe_defaults",
]
