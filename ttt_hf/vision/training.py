"""The outer loop: train or fine-tune a TTT-ViT with `transformers.Trainer` (the transformers-examples way).

`main()` parses `ModelArguments`, `DataArguments` and `TTTTrainingArguments` (TrainingArguments with a named
recipe's defaults), loads a dataset (`ttt_hf.common.data`), builds a model from a preset or a
checkpoint, trains, evaluates on the validation and test splits, and saves the model, its image processor,
`all_results.json` and PNG plots (training curves, inner-loop loss per layer). Defaults come from a named recipe
(`ttt_hf.vision.recipes`, `--recipe`); flags given on the command line win. It runs unchanged under
`torchrun --nproc_per_node N` (gloo on CPU, NCCL on GPU) and `accelerate launch`.
"""

import dataclasses
import json
import logging
import os
import sys

import numpy as np
import torch
import transformers
from huggingface_hub import get_token
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
)
from transformers.trainer_utils import get_last_checkpoint

from ..common.arguments import check_override_keys, parse_overrides, setup_logging
from ..common.checkpoints import from_pretrained
from ..common.data import image_info, load_image_dataset
from ..common.provenance import code_provenance, command_line, device_description
from ..common.run_files import TRAINING_ARGS_FILE
from ..hub.publish import HubPublishError, check_repo_id, publish
from ..modeling import PRESETS, TTTViTConfig, TTTViTForImageClassification, TTTViTImageProcessor
from .arguments import DataArguments, ModelArguments, TTTTrainingArguments, parse_arguments
from .device_data import (
    DeviceBatchCollator,
    IndexDataset,
    decode_sources,
    decode_split,
    device_data_plan,
    normalisation_table,
)
from .evaluation import write_sample
from .metrics import compute_classification_metrics
from .plots import plot_inner_losses, plot_training_curves
from .recipes import (
    RECIPE_FLAGS,
)
from .sizing import AUTO_MODEL, auto_geometry, preset_geometry
from .trainer import EpochTimer, ImageClassificationTrainer, LogLastStep, PerProcessSeed, SetEpochCallback, StepTimer
from .transforms import EvalTransform, MixupCollator, TrainTransform, collate_images

logger = logging.getLogger("ttt_hf.vision.training")


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
    path (`ttt_hf.vision.device_data`): the three splits decoded once into one uint8 tensor on the training device,
    and the training split at its own resolution too when the recipe crops."""
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
