"""Recipes, model sizing and the trainer's argument handling: what `ttt-hf train` does with no flag or a few."""

import json
import math

import pytest
import torch
from transformers import HfArgumentParser, get_scheduler

from ttt_hf import TTTViTConfig, cli
from ttt_hf.common import arguments
from ttt_hf.common.data import ImageInfo
from ttt_hf.vision import trainer, training
from ttt_hf.vision.recipes import DEFAULT_RECIPE, RECIPE_FLAGS, RECIPES, epochs_for
from ttt_hf.vision.sizing import auto_geometry, grid_patch_size


def parse(*argv):
    return training.parse_arguments(["--output_dir", "unused", *argv])


def test_paper_recipes_are_the_official_configs():
    """config_patch.py / config_pixel.py / train.py / tools/build_optax.py of github test-time-training/mttt."""
    _, data, args = parse("--recipe", "paper-patch")
    assert (args.learning_rate, args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (1e-3, 0.9, 0.999, 1e-8)
    # big_vision: p -= sched * (lr * adam + wd * p) with wd = 1e-4; torch AdamW: p -= lr_t * weight_decay * p
    assert args.learning_rate * args.weight_decay == pytest.approx(1e-4)
    assert args.weight_decay_mask == "kernels"
    assert (args.warmup_steps, args.get_warmup_steps(112_590), args.lr_scheduler_type) == (10_000, 10_000, "cosine")
    assert (args.max_grad_norm, args.global_batch_size, args.num_train_epochs) == (1.0, 1024, 90)
    assert (data.random_resized_crop, data.crop_min_scale, data.horizontal_flip, data.rand_augment) == (
        True, 0.05, True, True)  # fmt: skip
    assert data.mixup_alpha == 0.2 and data.eval_crop_fraction == 224 / 256  # resize_small(256) | central_crop(224)
    _, pixel, pixel_args = parse("--recipe", "paper-pixel")
    assert (pixel.random_resized_crop, pixel.horizontal_flip, pixel.rand_augment, pixel.mixup_alpha) == (
        True, False, False, 0.0)  # fmt: skip
    assert pixel_args.global_batch_size == 1024 and pixel_args.learning_rate == 1e-3


def test_paper_schedule_is_big_visions():
    """tools/utils.py create_learning_rate_schedule(decay_type="cosine", warmup_steps=10_000): the cosine of the
    progress after warm-up, times min(1, step / warmup_steps); Trainer builds its scheduler from the same flags."""
    _, _, args = parse("--recipe", "paper-patch")
    total, warmup = 112_590, 10_000  # 90 ImageNet epochs at batch 1024
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=args.learning_rate)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.get_warmup_steps(total), total)
    for step in (0, 1, 5_000, 9_999, 10_000, 10_001, 60_000, total - 1, total):
        progress = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
        official = 0.5 * (1 + math.cos(math.pi * progress)) * min(1.0, step / warmup)
        assert scheduler.lr_lambdas[0](step) == pytest.approx(official, abs=1e-12), step


def test_default_recipe_and_flags_over_it():
    _, data, args = parse()
    assert args.recipe == DEFAULT_RECIPE == "small-data"
    settings = (args.learning_rate, args.global_batch_size, data.horizontal_flip, data.rand_augment)
    assert settings == (2e-3, 64, False, False)
    _, data, args = parse("--recipe", "paper-patch", "--learning_rate", "5e-4", "--horizontal_flip", "false")
    assert (args.learning_rate, data.horizontal_flip, data.rand_augment) == (5e-4, False, True)  # the user's win
    _, _, args = parse("--recipe", "paper-patch", "--per_device_train_batch_size", "8")
    assert args.global_batch_size is None and args.per_device_train_batch_size == 8  # a per-device batch wins too
    with pytest.raises(ValueError, match="Unknown recipe 'paper'; choose from small-data, paper-patch"):
        parse("--recipe", "paper")


def test_recipe_from_a_json_file(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": "unused", "recipe": "paper-pixel", "num_train_epochs": 3}))
    _, data, args = training.parse_arguments([str(path)])
    assert (args.recipe, args.num_train_epochs, args.warmup_steps, data.horizontal_flip) == ("paper-pixel", 3, 10_000,
                                                                                            False)  # fmt: skip


def test_help_shows_every_recipe_value(capsys):
    with pytest.raises(SystemExit):
        training.parse_arguments(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in RECIPE_FLAGS:
        assert f"--{flag}" in text
    for name in RECIPES:
        assert f"{name}:" in text
    assert "paper-patch: 10000" in text and "small-data: 0.05" in text  # warm-up steps
    assert cli.main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert (
        "paper-pixel" in listed and "warmup_steps=10000" in listed and "num_train_epochs=from the data size" in listed
    )


def test_small_data_epochs_come_from_the_data_size(tmp_path):
    assert [epochs_for(n) for n in (1_437, 4_000, 54_000, 1_000_000)] == [60, 30, 10, 10]
    _, _, args = parse("--eval_strategy", "no")
    assert args.num_train_epochs is None  # not injected: the trainer sizes it from the training set
    trainer = training.ImageClassificationTrainer(
        model=torch.nn.Linear(1, 1), args=args, train_dataset=list(range(4_000))
    )  # fmt: skip
    assert trainer.args.num_train_epochs == 30 and trainer.args.per_device_train_batch_size == 64
    _, _, args = parse("--num_train_epochs", "3")
    assert args.num_train_epochs == 3
    _, _, args = parse("--recipe", "paper-patch")
    assert args.num_train_epochs == 90


def test_abbreviated_flags_and_contradictory_batches_are_refused():
    """argparse would take `--reci` for `--recipe` while the recipe lookup did not: no abbreviations."""
    with pytest.raises(ValueError, match="not used by the HfArgumentParser"):
        parse("--reci", "paper-patch")
    with pytest.raises(ValueError, match="--global_batch_size or --per_device_train_batch_size, not both"):
        parse("--global_batch_size", "64", "--per_device_train_batch_size", "8")
    _, _, args = parse("--per-device-train-batch-size", "8")  # transformers' hyphenated spelling counts as given
    assert (args.per_device_train_batch_size, args.global_batch_size) == (8, None)


def test_global_batch_splits_over_processes_and_accumulation():
    _, _, args = parse("--global_batch_size", "96", "--gradient_accumulation_steps", "3", "--use_cpu", "true")
    args.resolve_batch_size()
    assert args.per_device_train_batch_size == 32
    _, _, args = parse("--global_batch_size", "100", "--gradient_accumulation_steps", "3", "--use_cpu", "true")
    with pytest.raises(ValueError, match="give a multiple of 3, or --per_device_train_batch_size"):
        args.resolve_batch_size()


@pytest.mark.parametrize(
    ("side", "patch"), [(28, 7), (8, 2), (32, 8), (64, 16), (12, 3), (14, 2), (7, 1), (13, 1), (6, 2), (4, 2), (3, 1)]
)  # fmt: skip
def test_auto_patch_size_gives_a_grid_near_four(side, patch):
    assert grid_patch_size(side) == patch


def test_auto_model_is_sized_to_the_data():
    grey28 = ImageInfo(height=28, width=28, mode="L", num_channels=1)
    model_args = training.ModelArguments()
    data_args = training.DataArguments()
    model, processor = training.build_model(model_args, data_args, [str(i) for i in range(10)], grey28)
    config = model.config
    assert (config.image_size, config.patch_size, config.num_tokens, config.num_channels) == (28, 7, 16, 1)
    assert (config.mixer, config.hidden_size, config.num_hidden_layers) == ("ttt_mlp", 96, 4)
    assert processor.crop_size == {"height": 28, "width": 28}
    photo = ImageInfo(height=375, width=500, mode="RGB", num_channels=3)
    assert auto_geometry(photo) == {"image_size": 224, "patch_size": 16}
    assert auto_geometry(ImageInfo(height=100, width=120, mode="RGB", num_channels=3)) == {
        "image_size": 96, "patch_size": 16}  # fmt: skip


def test_a_preset_that_does_not_tile_the_data_names_the_fixing_flags():
    grey28 = ImageInfo(height=28, width=28, mode="L", num_channels=1)
    with pytest.raises(ValueError) as error:
        training.build_model(training.ModelArguments(preset="ttt-vit-tiny16-mlp"), training.DataArguments(),
                             ["a", "b"], grey28)  # fmt: skip
    message = str(error.value)
    for fix in ("--config_overrides patch_size=7", "--image_size 32", "--preset auto"):
        assert fix in message
    model, _ = training.build_model(training.ModelArguments(preset="ttt-vit-tiny16-mlp", image_size=32),
                                    training.DataArguments(), ["a", "b"], grey28)  # fmt: skip
    assert (model.config.image_size, model.config.patch_size, model.config.hidden_size) == (32, 16, 192)


def test_misspelt_config_key_is_refused_with_the_closest_names():
    with pytest.raises(ValueError, match=r"'num_hiden_layers' is not a field of TTTViTConfig\. Did you mean "
                                         r"'num_hidden_layers'"):  # fmt: skip
        training.build_model(training.ModelArguments(config_overrides="num_hiden_layers=2"), training.DataArguments(),
                             ["a", "b"], ImageInfo(8, 8, "L", 1))  # fmt: skip
    with pytest.raises(ValueError, match="labels come from the dataset"):
        arguments.check_override_keys({"num_labels": 3}, TTTViTConfig)


def test_trainer_uses_the_official_weight_decay_mask(tmp_path):
    grey8 = ImageInfo(8, 8, "L", 1)
    model, _ = training.build_model(training.ModelArguments(), training.DataArguments(), ["a", "b"], grey8)
    for mask, expected in (("kernels", set(model.decay_parameter_names())), ("transformers", None)):
        (args,) = HfArgumentParser(training.TTTTrainingArguments).parse_args_into_dataclasses(
            [
                "--output_dir",
                str(tmp_path),
                "--weight_decay_mask",
                mask,
                "--use_cpu",
                "true",
                "--report_to",
                "none",
                "--eval_strategy",
                "no",
            ]
        )
        trainer = training.ImageClassificationTrainer(model=model, args=args)
        names = set(trainer.get_decay_parameter_names(model))
        if expected is not None:
            assert names == expected
            assert "ttt_vit.layers.0.mixer.decoder_norm_weight" not in names
            assert "ttt_vit.layers.0.mixer.inner_init_1" not in names  # W_0's first bias
        else:
            assert "ttt_vit.layers.0.mixer.decoder_norm_weight" in names  # Trainer's rule decays it


def test_exact_cross_entropy_matches_torch():
    logits = torch.randn(7, 4, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 2, -100, 1, 0])
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100).item()
    assert trainer.cross_entropy(logits.numpy(), labels.numpy()) == pytest.approx(expected, rel=1e-12)
