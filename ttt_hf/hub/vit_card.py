"""Model cards of published runs, written with huggingface_hub's `ModelCard` / `ModelCardData` / `EvalResult`.

`build_card(repo_id, config, results, arguments)` turns a training run (its config.json, all_results.json and
training_args.json, as dicts) into a card: Hub metadata (library, pipeline tag, license, tags, datasets, metrics,
base model, and a model-index with the validation and test top-1/top-k accuracies) and a body that says what the
model is, how to load it with and without ttt_hf, the exact training command, the results next to the paper's,
the device and time, the limits, and how to cite. `check_card` is the offline validation every publish runs
(huggingface_hub's `ModelCard.validate` asks the Hub over the network).
"""

import math
import re

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..common.data import DATASETS
from ..common.run_files import SAMPLE_IMAGE
from ..modeling.configuration_ttt_vit import MIXER_PRESETS, mixer_preset_of
from .cards import (
    LICENSE,
    about_section,
    dataset_facts,
    is_local_path,
    is_repo_id,
    plots_section,
    plural,
    remote_code_install,
    test_split_facts,
)

SPLITS = (("validation", "eval"), ("test", "test"))


# The paper's ImageNet top-1 (%), Sun et al. 2023, Tables 1-2: (setting, paper name) -> accuracy.
PAPER_IMAGENET = {
    "patches": (
        "ViT-S/16, 196 tokens",
        [
            ("self-attention", 76.5),
            ("MTTT-MLP (T=1)", 74.6),
            ("linear attention (Katharopoulos)", 73.2),
            ("linear attention (identity map)", 73.0),
            ("MTTT-Linear", 72.8),
        ],
    ),
    "pixels": (
        "ViT-Ti on pixels, 50,176 tokens",
        [
            ("MTTT-MLP (shuffled, T=4)", 65.2),
            ("MTTT-MLP (T=1)", 61.9),
            ("linear attention (Katharopoulos)", 53.7),
            ("MTTT-Linear", 50.0),
            ("linear attention (identity map)", 49.9),
            ("self-attention", None),  # does not fit in memory
        ],
    ),
}


def paper_mixer_name(config: dict) -> str:
    """The paper's name for the token mixer of `config`: its `MIXER_PRESETS` entry's, else one in the same style."""
    suffix = mixer_preset_of(config)
    if suffix is not None:
        return MIXER_PRESETS[suffix].paper_name
    mixer = config.get("mixer", "ttt_mlp")
    if mixer == "ttt_mlp":
        steps = config.get("inner_steps", 1)
        shuffled = config.get("inner_batching") == "shuffled"
        return f"MTTT-MLP ({'shuffled, ' if shuffled else ''}T={steps})"
    if mixer == "linear_attention":
        elu = config.get("linear_attention_feature_map") == "elu_plus_one"
        normalizer = config.get("linear_attention_normalizer", "constant")
        return f"linear attention ({'elu+1' if elu else 'identity'} features, {normalizer} normaliser)"
    return {"ttt_linear": "MTTT-Linear", "self_attention": "self-attention"}.get(mixer, mixer)


def _mixer_sentence(config: dict) -> str:
    mixer = config.get("mixer", "ttt_mlp")
    steps, lr = config.get("inner_steps", 1), config.get("inner_lr", 1.0)
    lr_text = ", ".join(map(str, lr)) if isinstance(lr, list) else str(lr)
    batching = (
        f"each step on a shuffled mini-batch of N/{steps} of the image's tokens"
        if config.get("inner_batching") == "shuffled"
        else "each step on all of the image's tokens"
    )
    loop = (
        f"{plural(steps, 'inner gradient step')} (η = {lr_text}), {batching}, on a reconstruction loss over the "
        "tokens of that one image; the learner's trained weights then produce the layer's output"
    )
    if mixer == "ttt_mlp":
        extras = [
            "a decoder LayerNorm" if config.get("decoder_layer_norm", True) else "no decoder LayerNorm",
            "a learned W_0" if config.get("learn_inner_init", True) else "a frozen W_0",
        ]
        return (
            "**MTTT-MLP**: every self-attention layer is replaced by a TTT layer, an inner loop in which a two-layer "
            f"MLP learner f(·; W) (hidden width {config.get('inner_hidden_ratio', 4)}·d/H, GELU) is trained, per "
            f"image and per head, by {loop}; with {' and '.join(extras)}"
        )
    if mixer == "ttt_linear":
        return (
            "**MTTT-Linear**: every self-attention layer is replaced by a TTT layer whose inner learner is a linear "
            f"map starting at W_0 = 0, trained per image and per head by {loop} (with one step of η = 1 from zero "
            "it equals linear attention)"
        )
    if mixer == "linear_attention":
        return f"**{paper_mixer_name(config)}**, one of the paper's baselines, as the token mixer"
    return "**self-attention** (softmax), the paper's baseline: the inner loop whose learner is a kernel estimator"


def _size_name(config: dict) -> str:
    sizes = {(192, 12, 3): "a ViT-Ti-sized", (384, 12, 6): "a ViT-S-sized"}
    key = (config.get("hidden_size"), config.get("num_hidden_layers"), config.get("num_attention_heads"))
    return sizes.get(key, "a small")


def _top_k_key(results: dict, prefix: str) -> tuple[int, str] | None:
    for key in sorted(results):
        match = re.fullmatch(rf"{prefix}_top(\d+)_accuracy", key)
        if match:
            return int(match.group(1)), key
    return None


def eval_results(results: dict, dataset_type: str, dataset_name: str, dataset: str = "") -> list[EvalResult]:
    """Test top-1 and top-k accuracy of `all_results.json` (a run of `--dataset dataset`) as model-index entries,
    with the split the test images come from (`test_split_facts`). The validation accuracy stays in the card's text:
    none of the datasets has a validation split of its own to name."""
    entries = []
    split, note = test_split_facts(dataset)
    for prefix in ("test",):
        metrics = []
        if f"{prefix}_accuracy" in results:
            metrics.append(("top-1 accuracy", results[f"{prefix}_accuracy"], None))
        if (top_k := _top_k_key(results, prefix)) is not None:
            metrics.append((f"top-{top_k[0]} accuracy", results[top_k[1]], {"k": top_k[0]}))
        for name, value, args in metrics:
            entries.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image Classification",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name + note,
                    dataset_split=split,
                    metric_type="accuracy",
                    metric_name=name,
                    metric_value=float(value),
                    metric_args=args,
                )
            )
    return entries


def _base_model(arguments: dict, config: dict) -> str | None:
    name = (arguments.get("model") or {}).get("model_name_or_path") or config.get("_name_or_path")
    return name or None


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _results_table(results: dict) -> str:
    rows = ["| split | top-1 | top-k |", "|---|---|---|"]
    for split, prefix in SPLITS:
        top_k = _top_k_key(results, prefix)
        k_text = f"{_percent(results[top_k[1]])} (top-{top_k[0]})" if top_k else "—"
        rows.append(f"| {split} | {_percent(results.get(f'{prefix}_accuracy'))} | {k_text} |")
    if "test_slice_accuracy" in results:  # recorded by `ttt-hf zoo store`; the zoo's tests recompute it
        rows += ["", f"Test slice ({results.get('test_slice', 'a fixed slice of the test split')}): top-1 "
                 f"{_percent(results['test_slice_accuracy'])}."]  # fmt: skip
    return "\n".join(rows)


def _paper_section(config: dict, results: dict, dataset: str, recipe: str | None) -> str:
    setting = "pixels" if config.get("patch_size") == 1 else "patches"
    model_setting, rows = PAPER_IMAGENET[setting]
    ours = paper_mixer_name(config)
    imagenet = dataset in ("imagenet-1k", "ILSVRC/imagenet-1k", "imagenet")
    comparable = imagenet and config.get("image_size") == 224 and (recipe or "").startswith("paper-")
    lines = [f"The paper reports ImageNet-1k top-1 only ({model_setting}, 90 epochs, its recipe), in this order:", ""]
    lines += ["| mixer (paper) | ImageNet top-1 |", "|---|---|"]
    for name, value in rows:
        mark = " ← this model's mixer" if name == ours else ""
        lines.append(f"| {name}{mark} | {'does not fit in memory' if value is None else f'{value} %'} |")
    lines.append("")
    if comparable:
        paper = dict(rows).get(ours)
        lines.append(
            f"This run is the paper's setting (ImageNet-1k at 224², recipe `{recipe}`): test top-1 "
            f"{_percent(results.get('test_accuracy'))} against the paper's {paper} %."
        )
    else:
        lines.append(
            f"**Not comparable** with this run: it was trained on {dataset} at {config.get('image_size')}², "
            f"{config.get('num_tokens_text')}, with the `{recipe}` recipe, not on ImageNet-1k at 224² for 90 epochs. "
            "The table gives the paper's ordering of the mixers for reference only; small datasets need not "
            "reproduce it."
        )
    return "\n".join(lines)


def _duration(seconds) -> str:
    if seconds is None:
        return "not recorded"
    seconds = float(seconds)
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 5400
        else f"{seconds / 60:.1f} min"
        if seconds >= 90
        else f"{seconds:.1f} s"
    )


def _number(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _on_off(value) -> str:
    return {True: "on", False: "off"}.get(value, str(value))


def _training_section(results: dict, data_args: dict, dataset: str, provenance: str, recipe: str | None) -> str:
    settings = results.get("settings") or {}
    fraction = data_args.get("validation_fraction")
    own_test = dataset in DATASETS and DATASETS[dataset].official_test
    test = "its own test split" if own_test else "as many images held out of the training split the same way"
    if dataset not in DATASETS:
        test = "the dataset's own test split where it has one, else " + test
    splits = (
        f"validation: {fraction:.0%} of the training split held out (stratified, split seed "
        f"{data_args.get('split_seed')}); test: {test}"
        if fraction is not None
        else "the validation and test splits `ttt-hf train` made"
    )
    get = settings.get
    recipe_text = (
        f"learning rate {get('learning_rate')}, weight decay {get('weight_decay')} ({get('weight_decay_mask')}), "
        f"global batch {get('global_batch_size')}, {_number(get('num_train_epochs'))} epochs, "
        f"{get('lr_scheduler_type')} schedule after a warm-up of {get('warmup_steps')}, clipping "
        f"{get('max_grad_norm')}; augmentation: random-resized crop {_on_off(get('random_resized_crop'))} (area "
        f"{get('crop_min_scale')}–1), flips {_on_off(get('horizontal_flip'))}, RandAugment "
        f"{_on_off(get('rand_augment'))}, mixup {get('mixup_alpha')}"
    )
    world = settings.get("world_size", 1)
    processes = f"{world} {'process' if world == 1 else 'processes'}"
    epochs = _number(results.get("epoch", "?"))
    return f"""Data: {provenance}. Splits: {splits}.

The exact command of this run:

```bash
{results.get("command") or "not recorded"}
```

Recipe `{recipe}`: {recipe_text}. The full arguments are in `training_args.json`, every measured number in
`all_results.json`.

Device: {results.get("device") or "not recorded"}, {processes}. Training time (Trainer's `train_runtime`, with
the validation after each epoch): {_duration(results.get("train_runtime"))} for {epochs} epochs;
{_duration(results.get("epoch_seconds"))} per epoch of training steps (median after the first).{_speed(results)}"""


def _speed(results: dict) -> str:
    """' Steady training speed: N images/s (median step, ... data path).', where the run recorded it."""
    speed = results.get("steady_train_images_per_second")
    if speed is None:
        return ""
    path = f", {results['data_path']} data path" if results.get("data_path") else ""
    return f" Steady training speed: {speed:,.0f} images/s (the median step after the first{path})."


def expected_input(config: dict, dataset: str, dataset_name: str) -> str:
    side, channels = config["image_size"], config.get("num_channels", 3)
    kind = "grey" if channels == 1 else "RGB" if channels == 3 else f"{channels}-channel"
    content = DATASETS[dataset].content if dataset in DATASETS else f"an image like those of {dataset_name}"
    return (
        f"a {side}×{side} {kind} image of {content}. The processor converts other modes and resizes other sizes, "
        "but images unlike the training data get answers of unknown quality"
    )


def _usage_section(repo_id: str, config: dict, results: dict, dataset: str, dataset_name: str) -> str:
    sample = results.get("sample") or {}
    if sample:
        fetch = (
            f"# {SAMPLE_IMAGE}: a test image shipped in this repo (true label: {sample['label']})\n"
            f'image = hf_hub_download("{repo_id}", "{SAMPLE_IMAGE}")'
        )
        printed = f"  # prints: {sample['predicted']}"
    else:
        fetch, printed = 'image = "image.png"  # any image file, or a PIL image', ""
    ttt = config.get("mixer", "ttt_mlp").startswith("ttt_")
    model_words = (
        "The model itself, and what its inner loop does on the image (the reconstruction loss of every TTT layer at "
        "W_0 … W_T, the test-time training)"
        if ttt
        else "The model and its processor"
    )
    inner_flag = ", output_inner_losses=True" if ttt else ""
    inner_print = "\nprint([loss.mean(dim=(0, 1)).tolist() for loss in outputs.inner_losses])" if ttt else ""
    intro = (
        "The repo carries its own model code, so only PyTorch, transformers and Pillow are needed:\n\n"
        f"```bash\n{remote_code_install()}\n```"
    )
    return f"""## How to use

{intro}

```python
from huggingface_hub import hf_hub_download
from transformers import pipeline

classify = pipeline("image-classification", model="{repo_id}", trust_remote_code=True)
{fetch}
print(classify(image, top_k=1)[0]["label"]){printed}
```

Input: {expected_input(config, dataset, dataset_name)}. `trust_remote_code=True` runs this repo's Python
files: pin `revision=` to the commit you reviewed.

{model_words}:

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
with torch.no_grad():
    outputs = model(**processor(Image.open(image), return_tensors="pt"){inner_flag})
print(model.config.id2label[outputs.logits.argmax(-1).item()]){printed}{inner_print}
```

ttt-hf itself (training, evaluation, publishing) is not on PyPI: install it from its source (`pip install -e .` in a
clone); `import ttt_hf` then registers TTT-ViT with the Auto classes, so `trust_remote_code` is not needed.{
        _inference_speed(results)
    }"""


def _inference_speed(results: dict) -> str:
    speed = results.get("inference_images_per_s")
    if speed is None:
        return ""
    return (
        f"\n\nInference speed: {speed:,.0f} images/s on {results.get('inference_machine', 'an unrecorded machine')} "
        f"(batches of {results.get('inference_batch_size')}, forward pass only, no preprocessing; `ttt-hf zoo speed`)."
    )


def _limits(config: dict, dataset_name: str) -> str:
    side, channels = config["image_size"], config.get("num_channels", 3)
    limits = [
        "Intended use: research and teaching, to see what test-time training does in a small vision transformer and "
        "to compare token mixers. It is not meant for decisions about people or for production use.",
        f"Trained and evaluated on {dataset_name} only, at {side}×{side} with {plural(channels, 'channel')}: the "
        "processor resizes (and converts) other images, and accuracy on other data is unknown. No robustness, "
        "calibration or fairness evaluation was done.",
        "The validation and test numbers come from one run with one seed; on small datasets seeds differ by a point "
        "or more.",
    ]
    if config.get("mixer", "ttt_mlp").startswith("ttt_"):
        limits.insert(
            3,
            "The inner loop runs at inference too, on every image: a TTT layer costs more than linear attention (the "
            "paper: MTTT-Linear about 2× slower, MTTT-MLP with T=1 1.5× the FLOPs).",
        )
    if config.get("inner_batching") == "shuffled":
        limits.insert(
            3,
            "Shuffled inner mini-batches use one fixed token order per layer and head in evaluation "
            f"(`inner_shuffle_eval={config.get('inner_shuffle_eval', 'fixed')!r}`), so predictions are reproducible; "
            "the paper's code draws a random order at evaluation too.",
        )
    return "\n".join(f"- {item}" for item in limits)


def build_card(repo_id: str, config: dict, results: dict, arguments: dict, files=()) -> ModelCard:
    """The card of a run: `config` (config.json, with the provenance a publish adds), `results` (all_results.json),
    `arguments` (training_args.json), `files` (the names of the repo's files: its plots are shown)."""
    data_args, training = arguments.get("data") or {}, arguments.get("training") or {}
    dataset = data_args.get("dataset") or "an unrecorded dataset"
    hub_dataset, dataset_name, provenance = dataset_facts(dataset)
    base = _base_model(arguments, config)
    base_is_hub = base is not None and not is_local_path(base) and is_repo_id(base)
    recipe = results.get("recipe") or training.get("recipe")
    mixer = config.get("mixer", "ttt_mlp")
    model_name = repo_id.split("/")[-1]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license=LICENSE,
        tags=["image-classification", "vision", "test-time-training", "mttt", mixer.replace("_", "-")],
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=["accuracy"],
        base_model=base if base_is_hub else None,
        model_name=model_name,
        eval_results=eval_results(results, hub_dataset or dataset, dataset_name, dataset),
    )

    side, patch = config["image_size"], config["patch_size"]
    grid = side // patch
    tokens_text = f"{grid * grid} tokens ({grid}×{grid} {'pixels' if patch == 1 else f'patches of {patch}×{patch}'})"
    width, depth, heads = config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]
    labels = config.get("id2label") or {}
    names = [str(labels[k]) for k in sorted(labels, key=int)]
    label_list = ", ".join(names[:12]) + (f", … ({len(names) - 12} more)" if len(names) > 12 else "")
    parameters = results.get("num_parameters")
    origin = (
        f"Fine-tuned from [`{base}`](https://huggingface.co/{base}) with a new classification head."
        if base_is_hub
        else f"Fine-tuned from the local checkpoint `{base}` with a new classification head."
        if base
        else "Trained from scratch."
    )
    body = f"""# {model_name}

A TTT-ViT image classifier for {dataset_name} ({len(labels)} {"class" if len(labels) == 1 else "classes"}:
{label_list}), made with ttt-hf, the PyTorch / 🤗 transformers port of MTTT — "Learning to (Learn at Test Time)",
Sun et al., [arXiv 2310.13807](https://arxiv.org/abs/2310.13807) (the authors' JAX code:
[test-time-training/mttt](https://github.com/test-time-training/mttt)).

## Model

- Mixer: {_mixer_sentence(config)}.
- Size: {_size_name(config)} pre-LN ViT: width d = {width}, {depth} blocks, {heads} heads of width {width // heads},
  MLP {config.get("intermediate_size")}; no class token (mean pooling, tanh pre-logits).
- Tokens: {tokens_text} of a {side}×{side} input with {plural(config.get("num_channels", 3), "channel")};
  {config.get("position_embedding")} position embeddings.
- Parameters: {f"{parameters:,}" if parameters is not None else "not recorded"}.
- {origin}

{_usage_section(repo_id, config, results, dataset, dataset_name)}

## Training

{_training_section(results, data_args, dataset, provenance, recipe)}

## Results

{_results_table(results)}

{_paper_section({**config, "num_tokens_text": tokens_text}, results, dataset_name, recipe)}

{plots_section(files)}## Intended use and limits

{_limits(config, dataset_name)}

{about_section(config, ["mttt"])}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def check_card(card: ModelCard, results: dict) -> None:
    """Offline validation: the metadata parses back to the same data, the required fields are there and valid, and
    the model-index holds finite accuracies in [0, 1] that equal `all_results.json`. Raises `ValueError`."""
    problems = []
    try:
        parsed = ModelCard(str(card))  # YAML must parse; model-index must convert back to EvalResults
    except ValueError as error:
        raise ValueError(f"invalid model card: its metadata does not parse ({error})") from error
    data = parsed.data
    if data.to_dict() != card.data.to_dict():
        problems.append("the metadata does not survive a round trip")
    expected = {
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "license": LICENSE,
        "metrics": ["accuracy"],
    }
    for key, value in expected.items():
        if getattr(data, key, None) != value:
            problems.append(f"{key} is {getattr(data, key, None)!r}, not {value!r}")
    if not data.tags or "image-classification" not in data.tags:
        problems.append("tags lack image-classification")
    for dataset in data.datasets or []:
        if not is_repo_id(dataset):
            problems.append(f"dataset {dataset!r} is not a Hub id")
    if data.base_model is not None and not is_repo_id(data.base_model):
        problems.append(f"base_model {data.base_model!r} is not a Hub id")
    if not data.eval_results:
        problems.append("no model-index results")
    for result in data.eval_results or []:
        value = result.metric_value
        if not isinstance(value, float) or not math.isfinite(value) or not 0 <= value <= 1:
            problems.append(f"test {result.metric_name} is {value!r}, not an accuracy in [0, 1]")
    recorded = {r.metric_name: r.metric_value for r in data.eval_results or []}
    wanted = {r.metric_name: r.metric_value for r in eval_results(results, "x", "x")}
    if recorded != wanted:
        problems.append(f"model-index {recorded} differs from all_results.json {wanted}")
    if problems:
        raise ValueError("invalid model card: " + "; ".join(problems) + ".")


__all__ = ["PAPER_IMAGENET", "build_card", "check_card", "eval_results", "paper_mixer_name"]
