"""Tasks for general-purpose in-context learning (Kirsch et al., arXiv 2212.04458, section 3).

A base dataset (flattened grey images, z-normalised over all its examples and pixels) becomes many tasks: task s
is a random linear projection A_s (N_x x N_x, entries N(0, 1 / N_x)) of every input and a random permutation
rho_s of the labels, both drawn from the integer seed s. A sequence is `sequence_length` examples of one task.
Meta-training draws from the base dataset's train split and either a pool of `num_tasks` tasks (seeds
POOL_TASK_OFFSET + 0 .. num_tasks - 1: the memorisation-to-learning transition) or fresh seeds forever
(`num_tasks=None`); meta-testing draws unseen tasks (seeds that no pool holds; modeling/tasks_gpicl.py) on a test
split, of the same or another dataset.
Everything is a function of the sampler's seed and the step, so runs reproduce.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ..common.data import load_image_arrays
from ..modeling.tasks_gpicl import FIXED_TASK_SEED, POOL_TASK_OFFSET, SEED_FAMILIES, UNSEEN_TASK_OFFSET
from ..modeling.tasks_gpicl import random_task as task_of  # the task family, shared with the pipeline

# meta-training's outer-loop defaults (the paper's interventions vary them; cards name what differs)
DEFAULT_OPTIMIZER = {"meta_batch_size": 128, "learning_rate": 1e-3, "adam_epsilon": 1e-8}


def base_inputs(dataset: str, split: str, image_size: int = 14, data_dir: str | None = None):
    """(inputs float32 [n, image_size^2] z-normalised over all examples and pixels, labels int64 [n])."""
    images, labels = load_image_arrays(dataset, split, size=image_size, data_dir=data_dir)
    x = images.reshape(len(images), -1).astype(np.float32)
    x = (x - x.mean()) / max(float(x.std()), 1e-8)
    return torch.from_numpy(x), torch.from_numpy(labels)


@dataclass
class TaskSampler:
    """Draws batches of sequences [B, T, N_x] with labels [B, T] from a base dataset (see the module docstring).

    num_tasks: the pool size (seeds POOL_TASK_OFFSET + 0 .. num_tasks - 1), or None for a fresh task per sequence.
    fixed_task_fraction: the share of every batch drawn from one fixed task (the paper's biasing intervention).
    unseen: draw meta-test tasks (seeds from UNSEEN_TASK_OFFSET on) instead of meta-training ones.
    curriculum: until step s_1 every sequence uses k_1 classes of its task (drawn per sequence), until s_2 k_2, ...;
    all classes after the last step (`parse_curriculum("2:500,5:1000")`).
    distinct_examples: until step s_1 every sequence draws its examples from only m_1 base examples, so that they
    repeat exactly (bursty sequences: the label of a repeated input is in the context), until s_2 from m_2, ...;
    every example drawn afresh after the last step (`parse_curriculum("10:300", "--distinct_examples")`); a stage
    with m >= sequence_length changes nothing.
    without_replacement: the examples of a sequence are distinct base examples (where the split holds enough), so a
    query is never an image already in its context. Meta-test samplers (`unseen`) draw so by default; meta-training
    draws with replacement (a repeated image now and then, and on purpose in bursty stages)."""

    inputs: torch.Tensor  # [n, N_x]
    labels: torch.Tensor  # [n]
    sequence_length: int = 100
    num_tasks: int | None = None
    fixed_task_fraction: float = 0.0
    num_classes: int = 10
    seed: int = 0
    unseen: bool = False
    curriculum: tuple[tuple[int, int], ...] = ()  # ((until_step, classes per task), ...): fewer classes first
    distinct_examples: tuple[tuple[int, int], ...] = ()  # ((until_step, base examples per sequence), ...)
    without_replacement: bool | None = None  # None: as `unseen`

    def __post_init__(self):
        if self.without_replacement is None:
            self.without_replacement = self.unseen
        pool_size = SEED_FAMILIES["task pools"][1]
        if self.num_tasks is not None and not 1 <= self.num_tasks <= pool_size:
            raise ValueError(
                f"`num_tasks` must be a number of tasks in 1 .. 2^30, or None (unlimited), got {self.num_tasks}."
            )
        if not 0.0 <= self.fixed_task_fraction <= 1.0:
            raise ValueError(f"`fixed_task_fraction` must be in [0, 1], got {self.fixed_task_fraction}.")
        if int(self.labels.max()) >= self.num_classes:
            raise ValueError(f"the base dataset has labels up to {int(self.labels.max())}, above num_classes - 1.")
        for _, k in self.curriculum:
            if not 1 <= k <= self.num_classes:
                raise ValueError(f"a curriculum stage has {k} classes per task; it must be 1 .. {self.num_classes}.")
        for _, m in self.distinct_examples:
            if m < 1:
                raise ValueError(f"a --distinct_examples stage has {m} base examples per sequence; it must be >= 1.")
        self._by_class = self.labels.argsort(stable=True)  # row indices grouped by class
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        self._class_counts, self._class_starts = counts, counts.cumsum(0) - counts

    def classes_per_task(self, step: int) -> int:
        return next((k for until, k in self.curriculum if step < until), self.num_classes)

    def examples_per_sequence(self, step: int) -> int | None:
        """How many distinct base examples a sequence of batch `step` holds (None: every example drawn afresh)."""
        return next((m for until, m in self.distinct_examples if step < until), None)

    @property
    def input_dim(self) -> int:
        return self.inputs.shape[1]

    def task_seeds(self, step: int, batch_size: int) -> list[int]:
        """The task seed of every sequence of batch `step`."""
        g = _generator(self.seed, step, stream=0)
        fixed = round(self.fixed_task_fraction * batch_size)
        free = batch_size - fixed
        if self.unseen:
            seeds = (UNSEEN_TASK_OFFSET + step * batch_size + torch.arange(free)).tolist()
        elif self.num_tasks is None:
            seeds = torch.randint(0, 2**62, (free,), generator=g).tolist()
        else:
            seeds = (POOL_TASK_OFFSET + torch.randint(0, self.num_tasks, (free,), generator=g)).tolist()
        return [FIXED_TASK_SEED] * fixed + seeds

    def batch(self, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """Batch `step`: {"inputs": [B, T, N_x], "labels": [B, T], "task_seeds": [B]}."""
        g = _generator(self.seed, step, stream=1)
        seeds = self.task_seeds(step, batch_size)
        k = self.classes_per_task(step)
        if k == self.num_classes and self.without_replacement and len(self.labels) >= self.sequence_length:
            rows = torch.rand(batch_size, len(self.labels), generator=g).argsort(-1)[:, : self.sequence_length]
        elif k == self.num_classes:
            rows = torch.randint(0, len(self.labels), (batch_size, self.sequence_length), generator=g)
        else:  # k base classes per sequence, every example from one of them
            chosen = torch.rand(batch_size, self.num_classes, generator=g).argsort(-1)[:, :k]  # [B, k]
            pick = torch.randint(0, k, (batch_size, self.sequence_length), generator=g)
            classes = chosen.gather(1, pick)  # [B, T]
            offset = (torch.rand(batch_size, self.sequence_length, generator=g) * self._class_counts[classes]).long()
            rows = self._by_class[self._class_starts[classes] + offset]
        m = self.examples_per_sequence(step)
        if m is not None and m < self.sequence_length:  # bursty: every position repeats one of the first m examples
            rows = rows.gather(1, torch.randint(0, m, (batch_size, self.sequence_length), generator=g))
        x, y = self.inputs[rows], self.labels[rows]  # [B, T, N_x], [B, T]
        tasks = [task_of(s, self.input_dim, self.num_classes) for s in seeds]
        projections = torch.stack([a for a, _ in tasks])  # [B, N_x, N_x]
        permutations = torch.stack([p for _, p in tasks])  # [B, C]
        return {
            "inputs": x @ projections.transpose(1, 2),  # x A^T per sequence
            "labels": permutations.gather(1, y),
            "task_seeds": torch.tensor(seeds),
        }


def parse_curriculum(text: str | None, flag: str = "--curriculum") -> tuple[tuple[int, int], ...]:
    """'2:500,5:1000' -> ((500, 2), (1000, 5)): a value (classes per task for --curriculum, base examples per
    sequence for --distinct_examples) of 2 before step 500 and 5 before step 1000."""
    stages = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        try:
            value, until = (int(v) for v in item.split(":"))
        except ValueError:
            raise ValueError(f"{flag} takes value:until_step pairs such as '2:500,5:1000', got {item!r}.") from None
        stages.append((until, value))
    ends = [until for until, _ in stages]
    if any(b <= a for a, b in zip([0] + ends, ends)):
        raise ValueError(f"{flag} stages must end at increasing positive steps, got {text!r}.")
    return tuple(stages)


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A generator for one step and stream of a sampler (a fixed formula: Python's hash() varies by process)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 2 + stream) % 2**63)


class TaskStream(IterableDataset):
    """Sequences of a TaskSampler one by one, forever, for `Trainer` (its dataloader batches them again): batch
    `step` of size `batch_size` is cut into its sequences, so a run sees exactly the sampler's batches, in order,
    also with several DataLoader workers (which yield whole batches in turn)."""

    def __init__(self, sampler: TaskSampler, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self):
        worker = (
            torch.utils.data.get_worker_info()
        )  # DataLoader workers take turns: worker w builds steps w, w + W, ..
        step, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        while True:
            batch = self.sampler.batch(step, self.batch_size)
            for i in range(self.batch_size):
                yield {"inputs": batch["inputs"][i], "labels": batch["labels"][i]}
            step += stride
