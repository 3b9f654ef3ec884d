"""`ImageClassificationTrainer` (Trainer with the weight-decay mask of the official code, mixup's soft labels and the
device-resident collator) and the callbacks a run uses: per-process seeds, epoch and step timers, a time budget."""

import logging
import statistics
import time

import numpy as np
import torch
from transformers import (
    Trainer,
    TrainerCallback,
)

from .arguments import TTTTrainingArguments
from .recipes import (
    epochs_for,
)
from .transforms import collate_images

logger = logging.getLogger("ttt_hf.vision.training")


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
