"""Meta-train a general-purpose in-context learner with Trainer (`ttt-hf meta-train --help`).

Each training step is a batch of sequences of tasks drawn from a base dataset (ttt_hf.gpicl.tasks): the outer
loop is Trainer's, the learning algorithm is the model's forward pass. Evaluation reads unseen tasks of the
training dataset's test split and of other datasets, position by position, and, at the end, this project's SGD baseline
on the same sequences. The output folder holds the model (save_pretrained, remote code), all_results.json with
the accuracy curves and state size, and plots of accuracy against examples seen and against training steps.
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from ..common.arguments import check_override_keys, parse_overrides, setup_logging
from ..common.provenance import code_provenance, command_line, device_description
from ..common.run_files import RESULTS_FILE, TRAINING_ARGS_FILE, recorded_seed
from ..hub.gpicl_card import unseen_sets
from ..modeling import GPICLConfig, GPICLForInContextClassification
from .evaluation import BASELINES, in_context_accuracy
from .tasks import DEFAULT_OPTIMIZER, TaskSampler, TaskStream, base_inputs, parse_curriculum

CHANCE_EXIT = 0.2  # "left the plateau": accuracy at the last position on unseen tasks above this (10 classes)


@dataclass
class MetaArguments:
    """The tasks, the learner and its evaluation; every `TrainingArguments` flag applies too."""

    dataset: str = field(
        default="mnist-5k", metadata={"help": "base dataset of the meta-training tasks (train split)"}
    )
    eval_datasets: str = field(
        default="mnist-5k,fashion-mnist",
        metadata={"help": "comma-separated base datasets of the unseen evaluation tasks (their test splits)"},
    )
    image_size: int = field(default=14, metadata={"help": "images are resized to this side: N_x = image_size^2"})
    sequence_length: int = field(default=100, metadata={"help": "examples per sequence (one task each)"})
    num_tasks: int = field(
        default=0, metadata={"help": "the pool of meta-training tasks (seeds 0..n-1); 0: unlimited"}
    )
    fixed_task_fraction: float = field(
        default=0.0, metadata={"help": "share of every batch from one fixed task (the paper's biasing intervention)"}
    )
    curriculum: str | None = field(
        default=None, metadata={"help": "fewer classes per task first: 'classes:until_step,...', e.g. '2:500,5:1000'"}
    )
    distinct_examples: str | None = field(
        default=None,
        metadata={"help": "bursty sequences first, drawn from few base examples that repeat exactly: "
                  "'examples:until_step,...', e.g. '10:300' (10 per sequence until step 300, then all fresh)"},
    )  # fmt: skip
    backbone: str = field(default="transformer", metadata={"help": "transformer | lstm | ttt_linear | ttt_mlp"})
    hidden_size: int = field(default=128)
    num_hidden_layers: int = field(default=4)
    num_attention_heads: int = field(default=4)
    config_overrides: str | None = field(
        default=None, metadata={"help": "more GPICLConfig fields, e.g. 'ttt_mini_batch_size=8,inner_lr=0.5'"}
    )
    eval_sequences: int = field(default=256, metadata={"help": "sequences per evaluation, per dataset"})
    final_eval_sequences: int = field(default=1024, metadata={"help": "sequences of the final evaluation"})
    sgd_baseline: bool = field(default=True, metadata={"help": "the SGD row at the end, on the same sequences"})
    data_dir: str | None = field(default=None, metadata={"help": "where the fashion-mnist IDX files are"})


# how the final evaluation draws a sequence's examples (recorded in all_results.json; runs without it drew them with
# replacement, so that a query could be an image already in its context: ~18 % of last queries on mnist-5k's 500)
META_TEST_SAMPLING = "distinct examples per sequence"


def meta_training_defaults() -> dict:
    """TrainingArguments values of a meta-training run unless given (a fixed number of steps of an endless stream)."""
    return dict(max_steps=2000, per_device_train_batch_size=DEFAULT_OPTIMIZER["meta_batch_size"],
                learning_rate=DEFAULT_OPTIMIZER["learning_rate"], adam_epsilon=DEFAULT_OPTIMIZER["adam_epsilon"],
                weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0, eval_strategy="steps", eval_steps=100,
                logging_steps=25, save_strategy="no", report_to="none", dataloader_num_workers=0,
                max_grad_norm=1.0, dataloader_pin_memory=False)  # fmt: skip


class MetaTrainer(Trainer):
    """Trainer whose evaluation is in-context accuracy on unseen (and seen) tasks, position by position."""

    def __init__(self, *args, eval_samplers: dict[str, TaskSampler], eval_sequences: int, **kwargs):
        super().__init__(*args, eval_dataset=eval_samplers, **kwargs)  # read by `evaluate` below only
        self.eval_samplers, self.eval_sequences, self.curves = eval_samplers, eval_sequences, []

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", sequences=None):
        metrics, curves = {}, {}
        for name, sampler in self.eval_samplers.items():
            result = in_context_accuracy(self.model, sampler, sequences or self.eval_sequences)
            curves[name] = result["accuracy"]
            metrics[f"{metric_key_prefix}_{name}_accuracy_last"] = result["accuracy"][-1]
            metrics[f"{metric_key_prefix}_{name}_accuracy_mean"] = sum(result["accuracy"]) / len(result["accuracy"])
            metrics[f"{metric_key_prefix}_{name}_loss"] = sum(result["loss"]) / len(result["loss"])
        self.curves.append({"step": self.state.global_step, **curves})
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def build_samplers(meta: MetaArguments, seed: int) -> tuple[TaskSampler, dict[str, TaskSampler]]:
    """The meta-training sampler and the evaluation samplers: seen tasks (training pool, train split) and unseen
    tasks of every evaluation dataset's test split."""
    common = dict(sequence_length=meta.sequence_length)
    x, y = base_inputs(meta.dataset, "train", meta.image_size, meta.data_dir)
    num_tasks = meta.num_tasks or None
    train = TaskSampler(x, y, num_tasks=num_tasks, fixed_task_fraction=meta.fixed_task_fraction, seed=seed,
                        curriculum=parse_curriculum(meta.curriculum),
                        distinct_examples=parse_curriculum(meta.distinct_examples, "--distinct_examples"),
                        **common)  # fmt: skip
    evals = {}
    if num_tasks is not None:  # memorisation: the training tasks, fresh sequences
        evals["seen"] = TaskSampler(x, y, num_tasks=num_tasks, seed=seed + 1, **common)
    for name in filter(None, (n.strip() for n in meta.eval_datasets.split(","))):
        evals[f"unseen-{name}"] = unseen_sampler(meta, name, seed)
    return train, evals


def unseen_sampler(meta: MetaArguments, dataset: str, seed: int) -> TaskSampler:
    """Unseen tasks of `dataset`'s test split, as a run with these arguments and seed evaluates them."""
    x, y = base_inputs(dataset, "test", meta.image_size, meta.data_dir)
    return TaskSampler(x, y, unseen=True, seed=seed + 2, sequence_length=meta.sequence_length)


def reproduce_final_accuracy(folder) -> tuple[str, float, float]:
    """(task set, recomputed, recorded): accuracy after the last example on unseen tasks of the meta-training
    dataset, again from the learner saved in `folder` (a run's --output_dir or its zoo folder) on the very sequences
    of the run's final evaluation, next to the value its all_results.json (and so its card) records."""
    from ..modeling import GPICLForInContextClassification

    results = json.loads((Path(folder) / RESULTS_FILE).read_text())
    arguments = json.loads((Path(folder) / TRAINING_ARGS_FILE).read_text())
    meta = MetaArguments(**results["meta_arguments"])
    name = f"unseen-{meta.dataset}"
    sampler = unseen_sampler(meta, meta.dataset, arguments["training"]["seed"])
    model = GPICLForInContextClassification.from_pretrained(folder)
    if f"final_{name}_accuracy_last" not in results:
        raise ValueError(
            f"{folder} has no final evaluation on {name} (its --eval_datasets left out {meta.dataset}): nothing to "
            "check its weights against; meta-train again with the training dataset among --eval_datasets."
        )
    found = in_context_accuracy(model, sampler, meta.final_eval_sequences)["accuracy"][-1]
    return name, found, results[f"final_{name}_accuracy_last"]


def baselines(evals: dict, positions, sequences: int) -> dict:
    """{baseline: {unseen task set: {position: accuracy}}} of every simple learner of `BASELINES` on the sequences of
    the final evaluation: SGD at every position of `positions`, 1-nearest neighbour and logistic regression (trained
    to convergence, minutes on a CPU) after the last example only, which is what the tables compare."""
    unseen = {name: sampler for name, sampler in evals.items() if name.startswith("unseen")}
    return {
        key: {
            name: accuracy(sampler, positions if key == "sgd" else positions[-1:], sequences)
            for name, sampler in unseen.items()
        }
        for key, accuracy in BASELINES.items()
    }


def reevaluate(folder) -> dict:
    """Run the final evaluation of a saved learner again with today's evaluation (meta-test sequences of distinct
    examples) and write it into the folder's all_results.json and plots: the final metrics, the last curve, the SGD
    baseline on the same sequences. The training curves before it stay as they were measured."""
    from .plots import plot_in_context_accuracy, plot_meta_training

    folder = Path(folder)
    results = json.loads((folder / RESULTS_FILE).read_text())
    seed = recorded_seed(folder)
    meta = MetaArguments(**results["meta_arguments"])
    _, evals = build_samplers(meta, seed)
    model = GPICLForInContextClassification.from_pretrained(folder)
    curve = {"step": results["train_steps"]}
    for name, sampler in evals.items():
        found = in_context_accuracy(model, sampler, meta.final_eval_sequences)
        curve[name] = found["accuracy"]
        results[f"final_{name}_accuracy_last"] = found["accuracy"][-1]
        results[f"final_{name}_accuracy_mean"] = sum(found["accuracy"]) / len(found["accuracy"])
        results[f"final_{name}_loss"] = sum(found["loss"]) / len(found["loss"])
    if results["curves"] and results["curves"][-1]["step"] == results["train_steps"]:
        results["curves"][-1] = curve  # the final evaluation (the last one at the final step)
    if "sgd" in results:
        positions = sorted(int(t) for t in next(iter(results["sgd"].values())))
        results.update(baselines(evals, positions, meta.final_eval_sequences))
    results["meta_test_sampling"] = META_TEST_SAMPLING
    (folder / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=str))
    plot_in_context_accuracy(results, str(folder / "in_context_accuracy.png"))
    plot_meta_training(results, str(folder / "meta_training_curves.png"))
    return results


def build_model(meta: MetaArguments) -> GPICLForInContextClassification:
    overrides = parse_overrides(meta.config_overrides)
    check_override_keys(overrides, GPICLConfig)
    config = GPICLConfig(backbone=meta.backbone, input_dim=meta.image_size**2, num_classes=10,
                         hidden_size=meta.hidden_size, num_hidden_layers=meta.num_hidden_layers,
                         num_attention_heads=meta.num_attention_heads,
                         max_position_embeddings=max(1024, meta.sequence_length),
                         trained_sequence_length=meta.sequence_length, **overrides)  # fmt: skip
    return GPICLForInContextClassification(config)


def optimizer_settings(args: TrainingArguments) -> dict:
    """The outer loop's settings that the paper's interventions vary: meta-batch size, learning rate, Adam epsilon."""
    batch = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
    return {"meta_batch_size": batch, "learning_rate": args.learning_rate, "adam_epsilon": args.adam_epsilon}


def steps_to_leave_plateau(curves: list[dict], name: str) -> int | None:
    """The first evaluated step whose accuracy at the last position on `name` is above CHANCE_EXIT."""
    return next((c["step"] for c in curves if name in c and c[name][-1] > CHANCE_EXIT), None)


def run(meta: MetaArguments, args: TrainingArguments) -> dict:
    if args.load_best_model_at_end or args.metric_for_best_model:
        raise ValueError(
            "meta-training evaluates in-context accuracy on task sets, not an eval_loss: --load_best_model_at_end "
            "and --metric_for_best_model do not apply (every evaluation is in all_results.json's curves)."
        )
    set_seed(args.seed)
    train, evals = build_samplers(meta, args.seed)
    model = build_model(meta)
    batch = optimizer_settings(args)["meta_batch_size"]
    trainer = MetaTrainer(model=model, args=args, train_dataset=TaskStream(train, batch), eval_samplers=evals,
                          eval_sequences=meta.eval_sequences)  # fmt: skip
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    final = trainer.evaluate(metric_key_prefix="final", sequences=meta.final_eval_sequences)
    results = {
        **final,
        "train_runtime": seconds,
        "train_steps": trainer.state.global_step,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "state_size": model.state_size(meta.sequence_length - 1),  # floats carried, after the last example
        "state_size_examples": meta.sequence_length - 1,
        "backbone": meta.backbone,
        "meta_arguments": vars(meta),
        "optimizer": optimizer_settings(args),
        "command": command_line(getattr(args, "command", sys.argv[1:]), "meta-train"),
        "device": device_description(args),
        "curves": trainer.curves,
        "log_history": trainer.state.log_history,
    }
    results["meta_test_sampling"] = META_TEST_SAMPLING
    for name in evals:
        results[f"steps_to_leave_plateau_{name}"] = steps_to_leave_plateau(trainer.curves, name)
    if meta.sgd_baseline:
        positions = sorted({t for t in (1, 2, 5, 10, 25, 50) if t < meta.sequence_length} | {meta.sequence_length - 1})
        results.update(baselines(evals, positions, meta.final_eval_sequences))
    if args.process_index == 0:
        trainer.save_model(args.output_dir)
        with open(os.path.join(args.output_dir, RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2, default=str)
        with open(os.path.join(args.output_dir, TRAINING_ARGS_FILE), "w") as f:  # no pickle: what publishing reads
            json.dump(
                {"meta": vars(meta), "training": args.to_dict(), "code": code_provenance()}, f, indent=2, default=str
            )
        from .plots import plot_in_context_accuracy, plot_meta_training

        plot_in_context_accuracy(results, os.path.join(args.output_dir, "in_context_accuracy.png"))
        plot_meta_training(results, os.path.join(args.output_dir, "meta_training_curves.png"))
    return results


def parse_arguments(argv: list[str]) -> tuple[MetaArguments, TrainingArguments]:
    parser = HfArgumentParser((MetaArguments, TrainingArguments), allow_abbrev=False)
    given = {token[2:].split("=", 1)[0].replace("-", "_") for token in argv if token.startswith("--")}
    defaults = [f"--{key}={value}" for key, value in meta_training_defaults().items() if key not in given]
    if "output_dir" not in given:
        defaults.append("--output_dir=outputs/gpicl")
    meta, args = parser.parse_args_into_dataclasses(args=[*defaults, *argv])
    args.command = list(argv)
    return meta, args


def summary(results: dict, output_dir: str) -> str:
    lines, last = [], results["meta_arguments"]["sequence_length"] - 1
    for name in unseen_sets(results):
        sgd = results.get("sgd", {}).get(name, {}).get(last)
        sgd_text = "" if sgd is None else f" (SGD on the same examples: {sgd:.4f})"
        lines.append(f"{name}: accuracy after {last} examples {results[f'final_{name}_accuracy_last']:.4f}{sgd_text}")
    lines.append(f"model, all_results.json and plots: {os.path.abspath(output_dir)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--reevaluate"]:  # ttt-hf meta-train --reevaluate FOLDER...: today's final evaluation, again
        if len(argv) < 2:
            raise ValueError(
                "--reevaluate takes the folders of saved learners (a run's --output_dir or a zoo folder)."
            )
        for folder in argv[1:]:
            print(summary(reevaluate(folder), folder), flush=True)
        return {}
    meta, args = parse_arguments(argv)
    setup_logging(args)
    results = run(meta, args)
    if args.process_index == 0:
        print(summary(results, args.output_dir), flush=True)
    return results


if __name__ == "__main__":
    main()
