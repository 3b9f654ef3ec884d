"""The Learn-in-context tab's work: a task of GPICL's family on a base dataset (a fresh projection of the images and a
permutation of the class names), labelled examples and queries from its test split, and the accuracy on the queries
as the number of examples grows: the meta-trained learner (as `pipeline("in-context-classification")` feeds it)
next to this project's SGD and 1-nearest-neighbour on the very same inputs."""

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
from PIL import Image

from ..common.data import DATASETS, load_image_arrays
from ..gpicl.evaluation import nearest_neighbour_predict, sgd_predict
from ..modeling.tasks_gpicl import PIPELINE_TASK_OFFSET

CURVE_POINTS = (1, 2, 3, 5, 10, 20, 30, 40, 60, 80, 99)  # numbers of examples the curve is read at (and k)
DEMO_TASK_OFFSET = PIPELINE_TASK_OFFSET + 2**29  # the demo's tasks: the pipeline's family, away from its draws
LEARNERS = ("learner", "sgd", "nearest_neighbour")


@dataclass
class Task:
    """Task `number` on `dataset`: its projection seed, and the name each true class goes by in it."""

    dataset: str
    number: int
    names: list[str]  # true class -> its name in this task

    @property
    def projection_seed(self) -> int:
        return DEMO_TASK_OFFSET + self.number


@cache
def test_images(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """`dataset`'s test split (ttt-hf's split: the images no learner was meta-trained on) as arrays, read once."""
    return load_image_arrays(dataset, "test")


@cache
def class_names(dataset: str) -> tuple[str, ...]:
    """A bundled dataset's class names (its loader reads the whole dataset: once per dataset, not per task)."""
    return tuple(DATASETS[dataset].loader(None)[1])


def make_task(dataset: str, number: int) -> Task:
    """Task `number` on `dataset`: the projection of the task family's seed (applied by the pipeline) and the class
    names permuted by a generator of the same seed, so that the names say nothing of the classes. (The learner reads
    labels as ids in order of first appearance, so any naming is a new labelling to it.)"""
    names = class_names(dataset)
    permutation = torch.randperm(len(names), generator=torch.Generator().manual_seed(DEMO_TASK_OFFSET + number))
    return Task(dataset, number, [names[i] for i in permutation.tolist()])


@dataclass
class Examples:
    """Labelled examples and queries of one task (PIL images; names as the task calls the classes)."""

    support: list = field(default_factory=list)
    support_names: list[str] = field(default_factory=list)
    queries: list = field(default_factory=list)
    query_names: list[str] = field(default_factory=list)


def draw_examples(task: Task, support: int, queries: int) -> Examples:
    """`support` labelled examples and `queries` queries: distinct test images, drawn by the task's number."""
    images, labels = test_images(task.dataset)
    if support + queries > len(labels):
        raise ValueError(
            f"{task.dataset}'s test split has {len(labels)} images: ask for at most {len(labels)} in all."
        )
    chosen = np.random.default_rng(task.number).permutation(len(labels))[: support + queries]
    pictures = [Image.fromarray(images[i]) for i in chosen]
    names = [task.names[labels[i]] for i in chosen]
    return Examples(pictures[:support], names[:support], pictures[support:], names[support:])


@dataclass
class Curve:
    """Accuracy on the queries after the first k examples, for each k, per learner; and the predictions after all."""

    k: list[int]
    accuracy: dict[str, list[float]]  # "learner" | "sgd" | "nearest_neighbour" -> [len(k)]
    predictions: dict[str, list[str]]  # the same keys -> the name each query gets after every example


def curve_points(count: int) -> list[int]:
    """The k the curve is read at: CURVE_POINTS up to `count`, and `count` itself."""
    return sorted({k for k in CURVE_POINTS if k <= count} | {count})


def learner_predictions(model, encoded: dict) -> torch.Tensor:
    """The learner's class id [Q] for each query, each in its own sequence (its examples, then the query), as
    `pipeline("in-context-classification")` reads it; in one batch."""
    support, labels, queries = encoded["support"], encoded["labels"], encoded["queries"]
    count = len(queries)
    inputs = torch.cat([support.expand(count, -1, -1), queries[:, None]], 1)  # [Q, S + 1, N_x]
    labels = torch.cat([labels.expand(count, -1), labels.new_full((count, 1), -100)], 1)  # the query's is unknown
    with torch.no_grad():  # on the model's device: the pipeline puts it on an accelerator where there is one
        logits = model(inputs=inputs.to(model.device, model.dtype), labels=labels.to(model.device)).logits
    logits = logits[:, -1].float().cpu()  # [Q, C]
    return logits[:, : len(encoded["classes"])].argmax(-1)  # only the examples' classes exist


def learning_curve(pipe, examples: Examples, task: Task, points=None) -> Curve:
    """The learner (`pipe`, an in-context classification pipeline), SGD and 1-NN after the first k examples of
    `examples`, for each k of `points` (default `curve_points`), on the same normalised, projected inputs."""
    if not examples.support:
        raise ValueError("No labelled examples: add at least one.")
    if not examples.queries:
        raise ValueError("No queries to classify: ask for at least one.")
    points = list(points or curve_points(len(examples.support)))
    accuracy = {name: [] for name in LEARNERS}
    predictions = {}
    for k in points:
        encoded = pipe.encode(examples.queries, examples.support[:k], examples.support_names[:k], task.projection_seed)
        classes, count = encoded["classes"], len(examples.queries)
        x = encoded["support"].expand(count, -1, -1)  # [Q, k, N_x]: one copy per query, as the learner sees it
        y = encoded["labels"].expand(count, -1)
        found = {
            "learner": learner_predictions(pipe.model, encoded),
            "sgd": sgd_predict(x, y, encoded["queries"], len(classes)),
            "nearest_neighbour": nearest_neighbour_predict(x, y, encoded["queries"], len(classes)),
        }
        for name, ids in found.items():
            said = [classes[i] for i in ids.tolist()]
            accuracy[name].append(float(np.mean([a == b for a, b in zip(said, examples.query_names)])))
            predictions[name] = said
    return Curve(points, accuracy, predictions)


def curve_figure(curve: Curve, title: str):
    """Accuracy on the queries against the number of examples, one line per learner (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..gpicl.evaluation import BASELINE_NAMES

    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    legends = {"learner": "the meta-trained learner", **{k: v[1] for k, v in BASELINE_NAMES.items()}}
    for name in LEARNERS:
        axis.plot(curve.k, [100 * a for a in curve.accuracy[name]], marker="o", label=legends[name])
    axis.set_xscale("log")
    axis.set_xticks(curve.k, [str(k) for k in curve.k])
    axis.minorticks_off()
    axis.set_xlabel("labelled examples seen")
    axis.set_ylabel("accuracy on the queries (%)")
    axis.set_ylim(-2, 102)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    plt.close(figure)
    return figure
