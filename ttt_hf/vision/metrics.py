"""Classification metrics through `evaluate`, offline: top-1 and top-k accuracy from logits.

`evaluate.load("accuracy")` downloads a script from the Hub, so the metric is defined here as an
`evaluate.Metric` subclass and works with no network.
"""

import datasets
import evaluate
import numpy as np


class TopKAccuracy(evaluate.Metric):
    """Accuracy and top-k accuracy of class scores [N, C] (logits or probabilities) against labels [N]."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Top-1 and top-k accuracy from class scores.",
            citation="",
            inputs_description="predictions: [N, C] scores; references: [N] class indices; k: int (default 5).",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k: int = 5):
        scores, labels = np.asarray(predictions, dtype=np.float32), np.asarray(references)
        if scores.ndim != 2 or len(scores) != len(labels):
            raise ValueError(f"predictions must be [N, C] scores for N={len(labels)} labels, got {scores.shape}.")
        k = min(k, scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [N, k]
        hits = top == labels[:, None]
        return {"accuracy": float(hits[:, 0].mean()), f"top{k}_accuracy": float(hits.any(1).mean())}


def compute_classification_metrics(eval_pred, k: int = 5) -> dict:
    """`Trainer(compute_metrics=...)`: accuracy and top-k accuracy from an `EvalPrediction`."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    if labels.ndim == 2:  # soft labels (mixup at evaluation is unusual, but score against the argmax)
        labels = labels.argmax(-1)
    return TopKAccuracy().compute(predictions=logits, references=labels, k=k)
