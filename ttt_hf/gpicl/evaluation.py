"""In-context evaluation of GPICL learners: accuracy at every position on unseen tasks, this project's SGD baseline (a
linear classifier trained by SGD on the same context examples) on the same sequences, and the accuracy a user gets
through `pipeline("in-context-classification")` on real images (`python -m ttt_hf.gpicl.evaluation MODEL`)."""

from functools import partial

import torch
import torch.nn.functional as F

from .tasks import TaskSampler

# The SGD baseline: minibatch SGD on softmax cross-entropy from zero weights. Chosen on 256 meta-training sequences
# of mnist-5k (14x14): lr 0.1, 20 epochs gave 77.7 % after 99 examples; lr 0.03-0.3 with 20-40 epochs were within
# 2.5 points, lr 0.003 or 5 epochs lower (47-73 %).
SGD_LEARNING_RATE = 0.1
SGD_EPOCHS = 20
SGD_BATCH_SIZE = 10


@torch.no_grad()
def in_context_accuracy(model, sampler: TaskSampler, num_sequences: int = 512, batch_size: int = 128) -> dict:
    """Accuracy and loss of `model` at every position, averaged over `num_sequences` sequences of `sampler`:
    {"accuracy": [T], "loss": [T]} (position t has seen t examples before its query: t = 0 .. T - 1)."""
    model.eval()
    device = next(model.parameters()).device
    correct = losses = 0
    for step in range(-(-num_sequences // batch_size)):
        batch = sampler.batch(step, min(batch_size, num_sequences - step * batch_size))
        inputs, labels = batch["inputs"].to(device), batch["labels"].to(device)
        logits = model(inputs=inputs, labels=labels).logits.float()  # [B, T, C]
        correct = correct + (logits.argmax(-1) == labels).float().sum(0)
        losses = losses + F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").sum(0)
    return {"accuracy": (correct / num_sequences).tolist(), "loss": (losses / num_sequences).tolist()}


def baseline_accuracy(predict, sampler: TaskSampler, positions, num_sequences: int = 512,
                      batch_size: int = 128) -> dict[int, float]:  # fmt: skip
    """At each position t of `positions`, the share of sequences (the very ones `in_context_accuracy` reads) whose
    example t `predict(x [S, t, N_x], y [S, t], query [S, N_x], num_classes)` -> classes [S] gets right from the t
    examples before it."""
    hits = dict.fromkeys(positions, 0.0)
    for step in range(-(-num_sequences // batch_size)):
        batch = sampler.batch(step, min(batch_size, num_sequences - step * batch_size))
        for t in positions:
            x, y, query = batch["inputs"][:, :t], batch["labels"][:, :t], batch["inputs"][:, t]
            hits[t] += float((predict(x, y, query, sampler.num_classes) == batch["labels"][:, t]).sum())
    return {t: hits[t] / num_sequences for t in positions}


def sgd_accuracy(sampler: TaskSampler, positions, num_sequences: int = 512, batch_size: int = 128,
                 learning_rate: float = SGD_LEARNING_RATE, epochs: int = SGD_EPOCHS,
                 sgd_batch_size: int = SGD_BATCH_SIZE) -> dict[int, float]:  # fmt: skip
    """This project's SGD baseline (modelled on the paper's SGD row, not it): at each position t of `positions`, a
    linear classifier trained by minibatch SGD on the t examples before it classifies example t."""
    predict = partial(sgd_predict, learning_rate=learning_rate, epochs=epochs, batch_size=sgd_batch_size)
    return baseline_accuracy(predict, sampler, positions, num_sequences, batch_size)


def sgd_predict(x, y, query, num_classes, learning_rate: float = SGD_LEARNING_RATE, epochs: int = SGD_EPOCHS,
                batch_size: int = SGD_BATCH_SIZE) -> torch.Tensor:  # fmt: skip
    """The SGD baseline's classes [S] for `query` [S, N_x], one linear classifier per sequence trained on its
    examples x [S, t, N_x] with labels y [S, t]."""
    weight, bias = _sgd_linear(x, y, num_classes, learning_rate, epochs, batch_size, seed=x.shape[1])
    return ((query.unsqueeze(1) @ weight).squeeze(1) + bias).argmax(-1)


@torch.no_grad()
def nearest_neighbour_predict(x, y, query, num_classes) -> torch.Tensor:
    """The label of each query's nearest example (Euclidean, on the inputs the learner reads) [S]; class 0 when a
    sequence has no example yet."""
    if x.shape[1] == 0:
        return torch.zeros(len(query), dtype=torch.long)
    return y.gather(1, torch.cdist(query.unsqueeze(1), x).squeeze(1).argmin(-1, keepdim=True)).squeeze(1)


def nearest_neighbour_accuracy(sampler: TaskSampler, positions, num_sequences: int = 512, batch_size: int = 128):
    """1-nearest-neighbour among the examples before each position (`nearest_neighbour_predict`)."""
    return baseline_accuracy(nearest_neighbour_predict, sampler, positions, num_sequences, batch_size)


LOGISTIC_L2 = 1e-3  # the separable case needs a penalty to have an optimum: mean loss + LOGISTIC_L2 * |W|^2 / 2


def logistic_accuracy(sampler: TaskSampler, positions, num_sequences: int = 512, batch_size: int = 128,
                      l2: float = LOGISTIC_L2, tolerance: float = 1e-6) -> dict[int, float]:  # fmt: skip
    """Logistic (softmax) regression with a small L2 penalty, trained to convergence by L-BFGS on the examples
    before each position (every sequence its own convex problem; minimising their sum leaves each at its own
    optimum), until the gradient's largest entry is below `tolerance`."""

    def predict(x, y, query, num_classes):
        count, t, dim = x.shape
        if t == 0:
            return torch.zeros(count, dtype=torch.long)
        x64 = x.double()
        params = torch.zeros(count, dim + 1, num_classes, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS([params], lr=1, max_iter=500, tolerance_grad=tolerance, tolerance_change=0,
                                      history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

        def closure():
            optimiser.zero_grad()
            logits = x64 @ params[:, :dim] + params[:, dim : dim + 1]  # [S, t, C]
            loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)  # [S]
            total = (loss + l2 / 2 * params[:, :dim].square().sum((1, 2))).sum()
            total.backward()
            return total

        with torch.enable_grad():
            optimiser.step(closure)
        with torch.no_grad():
            return ((query.double().unsqueeze(1) @ params[:, :dim]).squeeze(1) + params[:, dim]).argmax(-1)

    return baseline_accuracy(predict, sampler, positions, num_sequences, batch_size)


# the simple learners every in-context learner is compared with, on the same sequences (all_results.json's keys)
BASELINES = {"sgd": sgd_accuracy, "nearest_neighbour": nearest_neighbour_accuracy, "logistic": logistic_accuracy}
# all_results.json key -> (a table column's text, words for a plot's legend)
BASELINE_NAMES = {"sgd": ("SGD", "SGD (linear, this project's)"), "nearest_neighbour": ("1-NN", "1-nearest neighbour"),
                  "logistic": ("LR", "logistic regression (to convergence)")}  # fmt: skip


def interval(accuracy: float, sequences: int) -> float:
    """Half the width of a 95 % interval of an accuracy measured on `sequences` independent sequences (normal
    approximation of the binomial; at least the one of a single miss or hit, so that 0 % and 100 % get one too)."""
    p = min(max(accuracy, 1 / sequences), 1 - 1 / sequences)
    return 1.96 * (p * (1 - p) / sequences) ** 0.5


def _sgd_linear(x, y, num_classes, learning_rate, epochs, batch_size, seed):
    """Softmax regression on x [S, t, N_x], y [S, t] (one classifier per sequence, trained side by side) by
    minibatch SGD from zero; returns weight [S, N_x, C] and bias [S, C]."""
    count, t, dim = x.shape
    weight, bias = x.new_zeros(count, dim, num_classes), x.new_zeros(count, num_classes)
    if t == 0:
        return weight, bias
    targets = F.one_hot(y, num_classes).to(x.dtype)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.rand(count, t, generator=g).argsort(-1)
        for start in range(0, t, batch_size):
            idx = order[:, start : start + batch_size]  # [S, m]
            xb = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, dim))
            error = (xb @ weight + bias.unsqueeze(1)).softmax(-1) - targets.gather(
                1, idx.unsqueeze(-1).expand(-1, -1, num_classes)
            )  # [S, m, C]: d loss / d logits
            weight -= learning_rate * xb.transpose(1, 2) @ error / idx.shape[1]
            bias -= learning_rate * error.mean(1)
    return weight, bias


def pipeline_accuracy(model, dataset: str, support: int = 99, queries: int = 40, draws: int = 5, seed: int = 0,
                      data_dir: str | None = None) -> float:  # fmt: skip
    """Accuracy of `pipeline("in-context-classification", model=model)` on `dataset`'s test images as a user calls
    it: `draws` times, `support` random labelled images (class names as labels) and `queries` other images to
    classify, all in their original size (the pipeline resizes, normalises and projects them)."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from ..common.data import load_image_arrays
    from ..modeling.tasks_gpicl import PIPELINE_TASK_OFFSET

    images, labels = load_image_arrays(dataset, "test", data_dir=data_dir)
    if support + queries > len(labels):
        raise ValueError(
            f"{dataset}'s test split has {len(labels)} images, fewer than support + queries = {support + queries}."
        )
    classify = pipeline("in-context-classification", model=model)
    rng, hits = np.random.default_rng(seed), 0
    for draw in range(draws):  # each draw its own task: a projection of the pipeline's family, not its default
        chosen = rng.permutation(len(labels))[: support + queries]  # distinct images
        context, asked = chosen[:support], chosen[support:]
        answers = classify([Image.fromarray(images[i]) for i in asked],
                           support=[Image.fromarray(images[i]) for i in context],
                           support_labels=[f"class {labels[i]}" for i in context],
                           projection_seed=PIPELINE_TASK_OFFSET + 1 + seed * draws + draw)  # fmt: skip
        hits += sum(answer[0]["label"] == f"class {labels[i]}" for answer, i in zip(answers, asked))
    return hits / (draws * queries)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ttt_hf.gpicl.evaluation", description=pipeline_accuracy.__doc__)
    parser.add_argument("model", help="a meta-trained learner: folder or Hub id")
    parser.add_argument("--datasets", default="mnist-5k,fashion-mnist")
    parser.add_argument("--support", type=int, default=99)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", help="where the fashion-mnist IDX files are")
    args = parser.parse_args(argv)
    for dataset in args.datasets.split(","):
        accuracy = pipeline_accuracy(args.model, dataset, args.support, args.queries, args.draws, args.seed,
                                     args.data_dir)  # fmt: skip
        print(f"{dataset}: {100 * accuracy:.1f} % of {args.draws * args.queries} queries through the pipeline "
              f"({args.draws} draws of {args.support} labelled test images)")  # fmt: skip


if __name__ == "__main__":
    main()
