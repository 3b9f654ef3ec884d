"""The model card of a meta-trained in-context learner (a `ttt-hf meta-train` run): Hub metadata with the in-context
accuracies on unseen tasks as the model-index, how to use it, how it was meta-trained, results next to the SGD
row and the paper's numbers, limits and citations."""

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..gpicl.evaluation import BASELINE_NAMES, SGD_EPOCHS, SGD_LEARNING_RATE, interval
from . import cards

BACKBONE_NAMES = {"transformer": "a causal Transformer", "lstm": "an LSTM", "ttt_linear": "causal TTT-Linear layers",
                  "ttt_mlp": "causal TTT-MLP layers"}  # fmt: skip
# Kirsch et al., Table 2: meta-trained on MNIST, accuracy on unseen tasks after 99 examples (%)
PAPER_RESULTS = {"Transformer": (73.70, 62.24), "LSTM": (25.39, 28.12), "SGD": (70.31, 50.78)}  # MNIST, Fashion-MNIST


def unseen_sets(results: dict) -> list[str]:
    """The evaluated sets of unseen tasks, e.g. ["unseen-mnist-5k", "unseen-fashion-mnist"]."""
    return [key[len("final_") : -len("_accuracy_last")] for key in sorted(results)
            if key.startswith("final_unseen-") and key.endswith("_accuracy_last")]  # fmt: skip


OPTIMIZER_NAMES = {"meta_batch_size": "meta-batch", "learning_rate": "lr", "adam_epsilon": "Adam eps"}


def interventions(meta: dict, optimizer: dict | None = None) -> str:
    """The meta-training in short: pool size, biasing, curricula, outer-loop settings other than the defaults
    ("fresh tasks" when none)."""
    from ..gpicl.tasks import DEFAULT_OPTIMIZER

    parts = []
    if meta.get("num_tasks"):
        parts.append(f"{meta['num_tasks']:,} tasks")
    if meta.get("fixed_task_fraction"):
        parts.append(f"{100 * meta['fixed_task_fraction']:.0f} % fixed task")
    if meta.get("curriculum"):
        parts.append(f"curriculum {meta['curriculum']}")
    if meta.get("distinct_examples"):
        parts.append(f"bursty {meta['distinct_examples']}")
    parts += [f"{OPTIMIZER_NAMES[key]} {value:g}" for key, value in (optimizer or {}).items()
              if key in DEFAULT_OPTIMIZER and value != DEFAULT_OPTIMIZER[key]]  # fmt: skip
    return ", ".join(parts) or "fresh tasks"


def curricula(meta: dict) -> str:
    """The meta-training curricula in words, as a clause to append ("" when none)."""
    parts = []
    if meta.get("curriculum"):
        parts.append(f"fewer classes per task first (classes:until_step {meta['curriculum']})")
    if meta.get("distinct_examples"):
        parts.append(f"bursty sequences first, each drawn from a few base examples that repeat exactly "
                     f"(examples:until_step {meta['distinct_examples']}), then every example fresh")  # fmt: skip
    return "; " + "; ".join(parts) if parts else ""


def accuracy_rows(results: dict) -> list[str]:
    """A markdown table: accuracy after n examples on each set of unseen tasks (final evaluation), SGD in brackets."""
    last = results["meta_arguments"]["sequence_length"] - 1
    final = results["curves"][-1]
    counts = [n for n in (1, 5, 10, 25, 50) if n < last] + [last]
    head = " | ".join(f"{n} example{'s' * (n > 1)}" for n in counts)
    rows = [f"| tasks | {head} |", "|---" * (len(counts) + 1) + "|"]
    for name in unseen_sets(results):
        sgd = (results.get("sgd") or {}).get(name) or {}
        cells = []
        for n in counts:
            value = sgd.get(str(n), sgd.get(n))
            cells.append(f"{100 * final[name][n]:.1f} %" + ("" if value is None else f" ({100 * value:.1f} %)"))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def baseline_rows(results: dict) -> list[str]:
    """A markdown table: accuracy after the last example with its 95 % interval, the learner next to the simple
    learners of `BASELINE_NAMES` trained on the very same examples (only those the run measured)."""
    last = results["meta_arguments"]["sequence_length"] - 1
    sequences = results["meta_arguments"]["final_eval_sequences"]
    keys = [key for key in BASELINE_NAMES if results.get(key)]
    rows = ["| tasks | this learner | " + " | ".join(BASELINE_NAMES[key][1] for key in keys) + " |",
            "|---" * (len(keys) + 2) + "|"]  # fmt: skip
    for name in unseen_sets(results):
        values = [results[f"final_{name}_accuracy_last"]]
        values += [(results[key].get(name) or {}).get(str(last)) for key in keys]
        cells = ["—" if v is None else f"{100 * v:.1f} ± {100 * interval(v, sequences):.1f} %" for v in values]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


GPICL_PIPELINE_TAG = "other"  # the Hub has no in-context task; with none it would infer token classification


def gpicl_eval_results(results: dict) -> list[EvalResult]:
    """Accuracy after the last context example on each set of unseen tasks, as model-index entries."""
    examples = results["meta_arguments"]["sequence_length"] - 1
    entries = []
    for name in unseen_sets(results):
        dataset = name[len("unseen-") :]
        hub_id, display, _ = cards.dataset_facts(dataset)
        split, note = cards.test_split_facts(dataset)
        entries.append(EvalResult(
            task_type="in-context-classification", task_name="In-context classification (unseen tasks)",
            dataset_type=hub_id or dataset, dataset_name=display + note, dataset_split=split,
            metric_type="accuracy", metric_name=f"accuracy after {examples} examples",
            metric_value=float(results[f"final_{name}_accuracy_last"]),
        ))  # fmt: skip
    return entries


def _not_black_box(config: dict) -> str:
    """A paragraph saying, where it holds, that the model is not the paper's black box: it has causal convolutions."""
    if not config.get("ttt_conv_size"):
        return ""
    return (
        f"\n\n**Not the paper's black-box model**: causal convolutions (width {config['ttt_conv_size']}) mix each "
        "token with the ones before it ahead of the mixer's keys and queries. The paper's models have none; numbers "
        "here compare with the paper's only as a reference, not as a reproduction."
    )


def _usage_section(repo_id: str, config: dict, hub_id: str | None) -> str:
    """Install line and a complete example: support and query images from the Hub dataset of meta-training."""
    dataset = hub_id or "ylecun/mnist"
    return f"""## How to use

The repo carries its own model and pipeline code, so only PyTorch, transformers and Pillow are needed (and
`datasets` for this example's images):

```bash
{cards.remote_code_install()} datasets
```

A task it never saw: 99 labelled examples in the context, then 10 queries, each answered in its own sequence; the
pipeline brings the images to the learner's input (grey, {round(config["input_dim"] ** 0.5)}×{
        round(config["input_dim"] ** 0.5)
    } pixels, normalised and projected by a random matrix of the task family):

```python
from datasets import load_dataset
from transformers import pipeline

images = load_dataset("{dataset}", split="test").shuffle(seed=0)
support, queries = images[:99], images[99:109]
classify = pipeline("in-context-classification", model="{repo_id}", trust_remote_code=True)
predictions = classify(queries["image"], support=support["image"], support_labels=support["label"], top_k=1)
correct = sum(p[0]["label"] == label for p, label in zip(predictions, queries["label"]))
print(f"{{correct}} of {{len(queries['label'])}} queries right")
```

`trust_remote_code=True` runs this repo's Python files: pin `revision=` to the commit you reviewed. ttt-hf itself is
not on PyPI: install it from its source (`pip install -e .` in a clone); `import ttt_hf` then registers GPICL with
the Auto classes and the pipeline, so `trust_remote_code` is not needed."""


def build_gpicl_card(repo_id: str, config: dict, results: dict, arguments: dict, files=()) -> ModelCard:
    meta = results["meta_arguments"]
    dataset = meta["dataset"]
    hub_id, display, provenance = cards.dataset_facts(dataset)
    backbone = config["backbone"]
    data = ModelCardData(
        library_name="transformers", license=cards.LICENSE, model_name=repo_id.split("/")[-1],
        pipeline_tag=GPICL_PIPELINE_TAG,
        tags=["in-context-learning", "in-context-classification", "meta-learning", "gpicl", "test-time-training",
              backbone.replace("_", "-")],
        datasets=[hub_id] if hub_id else None, metrics=["accuracy"], eval_results=gpicl_eval_results(results),
    )  # fmt: skip
    rows = accuracy_rows(results)
    sgd_note = (
        f"; in brackets, a linear classifier trained by SGD on the same n examples (this project's baseline, lr "
        f"{SGD_LEARNING_RATE}, {SGD_EPOCHS} epochs; the paper's SGD numbers are its own, below)"
        if results.get("sgd")
        else ""
    )
    minutes = results.get("train_runtime", 0) / 60
    body = f"""# {repo_id.split("/")[-1]}

A general-purpose in-context learner (GPICL; Kirsch et al., [arXiv 2212.04458](https://arxiv.org/abs/2212.04458))
made with ttt-hf: {BACKBONE_NAMES[backbone]} meta-trained so that its forward pass learns a new classification task
from the labelled examples in its context. It reads (x_1, –), (x_2, y_1), …, (x_T, y_{{T-1}}) and predicts y_t at every
position; x is a {config["input_dim"]}-value vector, y one of {config["num_classes"]} classes.{_not_black_box(config)}

- Width {config["hidden_size"]}, {cards.plural(config["num_hidden_layers"], "layer")}{
        "" if backbone == "lstm" else f", {config['num_attention_heads']} heads"
    };
  {results.get("num_parameters", 0):,} parameters; state carried between positions after
  {results.get("state_size_examples")} examples: {results.get("state_size", 0):,} floats.
- Meta-trained on tasks made from {display} ({provenance}): each task projects the flattened
  {meta["image_size"]}×{meta["image_size"]} grey images by a random Gaussian matrix and permutes the labels;
  {"a fresh task for every sequence" if not meta.get("num_tasks") else f"a pool of {meta['num_tasks']:,} tasks"}{
        f", {100 * meta['fixed_task_fraction']:.0f} % of every batch from one fixed task"
        if meta.get("fixed_task_fraction")
        else ""
    }{curricula(meta)}.

{_usage_section(repo_id, config, hub_id)}

## Meta-training

`{results.get("command", "ttt-hf meta-train")}`: {results.get("train_steps")} steps in {minutes:.1f} min on
{results.get("device", "an unrecorded device")}.

## Results

Accuracy after n examples on tasks never seen in meta-training (test splits, {meta["final_eval_sequences"]:,}
sequences each){sgd_note}:

{chr(10).join(rows)}

After the last example, with 95 % intervals over the {meta["final_eval_sequences"]:,} sequences, next to simple
learners trained on exactly the same examples (where the intervals overlap, call it a tie):

{chr(10).join(baseline_rows(results))}

The paper's numbers (its Table 2: meta-trained on all of MNIST, with far more compute; its black-box Transformer, not
this model), unseen MNIST and Fashion-MNIST tasks after 99 examples:
{"; ".join(f"{name} {mnist} % and {fashion} %" for name, (mnist, fashion) in PAPER_RESULTS.items())}.

{cards.plots_section(files)}## Intended use and limits

Intended use: research and teaching, to study how a sequence model learns a task from the examples in its context,
and how a test-time-training state compares with attention there. It is not meant for decisions about people or
for production use.

Tasks are {config["num_classes"]}-way with inputs of exactly {config["input_dim"]} values; other inputs must be brought
to that form (the pipeline resizes images and projects them as in meta-training). Accuracy depends on the task
family: inputs far from the meta-training data (colour photographs, other resolutions) are out of distribution.
Sequences longer than the {meta["sequence_length"]} positions of meta-training are untested (the pipeline warns).

{cards.about_section(config, ["gpicl", "ttt-layers"] if backbone.startswith("ttt") else ["gpicl"])}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def check_gpicl_card(card: ModelCard, results: dict) -> None:
    """The metadata parses back unchanged and its model-index equals all_results.json. Raises `ValueError`."""
    parsed = ModelCard(str(card))
    if parsed.data.to_dict() != card.data.to_dict():
        raise ValueError("invalid model card: the metadata does not survive a round trip.")
    recorded = {(r.dataset_name, r.metric_value) for r in parsed.data.eval_results or []}
    wanted = {(r.dataset_name, r.metric_value) for r in gpicl_eval_results(results)}
    if not recorded or recorded != wanted:
        raise ValueError(f"invalid model card: model-index {recorded} differs from all_results.json {wanted}.")
    if parsed.data.pipeline_tag != GPICL_PIPELINE_TAG:
        raise ValueError(f"invalid model card: pipeline_tag {parsed.data.pipeline_tag!r}, not {GPICL_PIPELINE_TAG!r}.")
