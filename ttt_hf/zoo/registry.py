"""The zoo's registry: every model ttt-hf trains and publishes, written once (`ZOO`, built from `SETTINGS` and
the GPICL backbones), and where a trained entry lives (model_cards/<name>/)."""

from dataclasses import dataclass
from pathlib import Path

from ..common.arguments import DEFAULT_SEED
from ..common.run_files import RESULTS_FILE
from ..gpicl.recipes import BURSTY, EVAL, LEARNERS
from ..modeling.configuration_ttt_vit import MIXER_PRESETS
from ..vision.recipes import DEFAULT_RECIPE

# the entries the demo's Space shows (`ttt-hf zoo space`, `zoo publish --space`): the first two are the pair the
# Classify tab opens with, MTTT-MLP against linear attention of the same setting
SPACE_MODELS = ("ttt-vit-mlp-fmnist-cpu", "ttt-vit-linattn-fmnist-cpu", "ttt-vit-linear-fmnist-cpu",
                "ttt-vit-attn-fmnist-cpu", "ttt-vit-mlp-mnist-5k", "gpicl-transformer-mnist-5k",
                "gpicl-ttt-linear-mnist-5k", "gpicl-ttt-mlp-mnist-5k")  # fmt: skip
MODEL_CARDS = Path(__file__).resolve().parents[2] / "model_cards"  # the repository's folder (editable install)
MAX_FOLDER_BYTES = 5 * 1024 * 1024  # a zoo folder lives in git
SLICE_SIZE = 200  # the test slice: the first images of the test split (all of it when smaller: digits has 180)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    dataset: str
    preset: str = "auto"
    overrides: str | None = None  # --config_overrides
    recipe: str = DEFAULT_RECIPE
    flags: tuple[str, ...] = ()  # further `ttt-hf train` flags
    seed: int = DEFAULT_SEED
    setting: str = ""  # what the results table groups by
    mixer: str = "mlp"  # the MIXER_PRESETS suffix (a classifier) or the GPICL backbone (an in-context learner)
    plan: str = "CPU, minutes"  # where and how long it is meant to train
    trainer: str = "train"  # `ttt-hf train` (a TTT-ViT classifier) or `ttt-hf meta-train` (a GPICL learner)
    tier: str = "CPU"  # where it is meant to train: "CPU" or "GPU"

    @property
    def in_context(self) -> bool:
        return self.trainer == "meta-train"

    @property
    def description(self) -> str:
        """The model in words: the paper's name of the mixer, or the GPICL backbone."""
        return f"GPICL, {self.mixer} backbone" if self.in_context else MIXER_PRESETS[self.mixer].paper_name

    def train_arguments(self) -> list[str]:
        """The `ttt-hf train` / `ttt-hf meta-train` flags of this entry (defaults left out, so the recorded command
        stays short)."""
        arguments = ["--dataset", self.dataset] + (["--backbone", self.mixer] if self.in_context else [])
        if self.preset != "auto":
            arguments += ["--preset", self.preset]
        if self.overrides:
            arguments += ["--config_overrides", self.overrides]
        if self.recipe != DEFAULT_RECIPE:
            arguments += ["--recipe", self.recipe]
        arguments += list(self.flags)
        if self.seed != DEFAULT_SEED:
            arguments += ["--seed", str(self.seed)]
        return arguments

    def command(self) -> str:
        import shlex

        return shlex.join(["ttt-hf", self.trainer, *self.train_arguments()])


@dataclass(frozen=True)
class ZooSetting:
    """One comparison of the zoo: every mixer in `mixers` trained on one dataset with one model size, recipe and
    budget (what `ttt-hf zoo train --setting NAME` runs), on the device of its tier."""

    name: str  # the entries are ttt-vit-<mixer suffix>-<name>[-seed<k>]
    tier: str  # "CPU" (trained on 2 CPU cores) or "GPU" (one device call: scripts/train_zoo_gpu.sh)
    dataset: str
    description: str  # the input in words, for the results table
    preset: str  # the preset prefix ("auto" keeps the trainer's auto model, with the mixer as an override)
    overrides: str
    flags: tuple[str, ...]
    mixers: tuple[str, ...]
    seeds: dict  # mixer suffix -> seeds (the others: seed 0)
    plan: str

    def entries(self) -> list[ZooEntry]:
        entries = []
        for suffix in self.mixers:
            mixer = ",".join(f"{key}={value}" for key, value in MIXER_PRESETS[suffix].fields.items())
            for seed in self.seeds.get(suffix, (0,)):
                entries.append(
                    ZooEntry(
                        f"ttt-vit-{suffix}-{self.name}" + (f"-seed{seed}" if seed else ""),
                        self.dataset,
                        preset="auto" if self.preset == "auto" else f"{self.preset}-{suffix}",
                        overrides=",".join(filter(None, [self.overrides, mixer if self.preset == "auto" else ""])),
                        flags=self.flags,
                        seed=seed,
                        setting=self.name,
                        mixer=suffix,
                        plan=self.plan,
                        tier=self.tier,
                    )
                )
        return entries


ALL_MIXERS = tuple(MIXER_PRESETS)
PATCH_MIXERS = tuple(s for s in MIXER_PRESETS if s != "mlp-shuffled4")  # shuffled batching is the pixel variant
TWO_SEEDS = {"mlp": (0, 1), "linattn": (0, 1)}  # the paper's key comparison gets two seeds; the others one
# Fashion-MNIST, all 60,000 training images (54,000 train / 6,000 validation; test = the official 10,000).
# GPU tier: one small ViT for every mixer, one recipe and budget per setting. Patches: 28x28 input, 4x4 patches
# (49 tokens), sin-cos positions. Pixels: 14x14 input (196 tokens) and 28x28 (784 tokens), learned positions.
FMNIST_MODEL = "hidden_size=96,num_hidden_layers=6,num_attention_heads=3,intermediate_size=384"
# Batch 512 (lr 3e-3, the default recipe's 2e-3 at batch 64 scaled by less than sqrt) and 20 epochs: sized so that
# the 19 runs fit one device call at the throughput targets; bf16 autocast and torch.compile.
FMNIST_FLAGS = ("--num_train_epochs", "20", "--global_batch_size", "512", "--learning_rate", "3e-3",
                "--crop_min_scale", "0.5", "--horizontal_flip", "true", "--bf16", "true",
                "--torch_compile", "true")  # fmt: skip
# CPU tier: the trainer's auto model (4 layers of width 96; 7x7 patches of 28x28 images, 16 tokens) for every mixer,
# 12 epochs with flips; and digits as pixels (8x8, 64 tokens), 30 epochs of its 1,437 training images.
CPU_FLAGS = ("--num_train_epochs", "12", "--horizontal_flip", "true")
AUTO_SIZE = "hidden_size=96,num_hidden_layers=4,num_attention_heads=3,intermediate_size=384"
SETTINGS = {
    setting.name: setting
    for setting in (
        ZooSetting("fmnist-cpu", "CPU", "fashion-mnist", "Fashion-MNIST, 7x7 patches (16 tokens)", "auto", "",
                   CPU_FLAGS, PATCH_MIXERS, TWO_SEEDS, "CPU, 25 min"),
        ZooSetting("digits-pixel", "CPU", "digits", "digits as pixels (8x8, 64 tokens)", "ttt-vit-tiny-pixel",
                   AUTO_SIZE, ("--num_train_epochs", "30"), ALL_MIXERS, {}, "CPU, 10 min"),
        ZooSetting("fmnist-patch", "GPU", "fashion-mnist", "Fashion-MNIST, 4x4 patches (49 tokens)", "ttt-vit-tiny16",
                   f"{FMNIST_MODEL},patch_size=4", FMNIST_FLAGS + ("--image_size", "28"), PATCH_MIXERS, TWO_SEEDS,
                   "GPU"),
        ZooSetting("fmnist-pixel", "GPU", "fashion-mnist", "Fashion-MNIST as 14x14 pixels (196 tokens)",
                   "ttt-vit-tiny-pixel", FMNIST_MODEL, FMNIST_FLAGS + ("--image_size", "14"), ALL_MIXERS, TWO_SEEDS,
                   "GPU"),
        ZooSetting("fmnist-pixel28", "GPU", "fashion-mnist", "Fashion-MNIST as 28x28 pixels (784 tokens)",
                   "ttt-vit-tiny-pixel", FMNIST_MODEL, FMNIST_FLAGS + ("--image_size", "28"),
                   ("mlp", "mlp-shuffled4", "linattn", "attn"), {}, "GPU, if the measured throughput fits"),
    )
}  # fmt: skip


def _zoo() -> dict[str, ZooEntry]:
    entries = [
        ZooEntry("ttt-vit-mlp-digits", "digits", setting="digits"),
        ZooEntry("ttt-vit-mlp-mnist-5k", "mnist-5k", setting="mnist-5k"),
        # the trainer's defaults on Fashion-MNIST (7x7 patches, 16 tokens, 10 epochs): the base of the fine-tuning
        # example; the comparison of the mixers is the fmnist-patch / fmnist-pixel entries below
        ZooEntry("ttt-vit-mlp-fashion-mnist", "fashion-mnist", setting="fashion-mnist auto", plan="CPU, 25 min"),
    ]
    for setting in SETTINGS.values():
        entries += setting.entries()
    for backbone, recipe in LEARNERS.items():  # the in-context learners (gpicl/recipes.py)
        entries += [
            ZooEntry(
                f"gpicl-{backbone.replace('_', '-')}-mnist-5k" + ("" if seed == DEFAULT_SEED else f"-seed{seed}"),
                "mnist-5k",
                overrides=recipe.overrides,
                flags=(*BURSTY, *EVAL, "--max_steps", str(recipe.steps)),
                seed=seed,
                setting="in-context, mnist-5k tasks",
                mixer=backbone,
                plan=recipe.plan,
                trainer="meta-train",
            )
            for seed in recipe.seeds
        ]
    return {entry.name: entry for entry in entries}


ZOO = _zoo()


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; `ttt-hf zoo list` lists them: {', '.join(ZOO)}.")
    return ZOO[name]


def folder(name: str, model_cards=None) -> Path:
    return Path(model_cards or MODEL_CARDS) / name


def is_trained(name: str, model_cards=None) -> bool:
    return (folder(name, model_cards) / RESULTS_FILE).is_file()
