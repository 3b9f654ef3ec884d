"""`pipeline("in-context-classification")`: labelled support examples and query examples in, predictions out,
from a meta-trained GPICL learner — no gradient step, no fine-tuning: the forward pass learns the task.

    classify = pipeline("in-context-classification", model="outputs/gpicl")
    classify(query_images, support=support_images, support_labels=["cat", "dog", ...], top_k=2)

Each example (a PIL image, a path, or a 1-D array of `input_dim` values) becomes what the learner was meta-trained
on: grey, resized to sqrt(input_dim) pixels a side, flattened, z-normalised with the support set's mean and
standard deviation, and projected by a random matrix of the task family (`projection_seed`; by default one that no
meta-training pool holds), as a meta-training task's inputs are. Every query is classified in its own sequence:
the support examples with their labels, then the query, whose prediction is read at the last position.
"""

import numpy as np
import torch
from transformers import Pipeline
from transformers.utils import logging

from .pipeline_ttt_vit import load_image_in_its_mode
from .tasks_gpicl import PIPELINE_TASK_OFFSET, random_task

logger = logging.get_logger(__name__)


class InContextClassificationPipeline(Pipeline):
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, support=None, support_labels=None, top_k=None, projection_seed=None, timeout=None):
        if projection_seed is None:  # a task of no other seed family (a memorised task's labels would clash)
            projection_seed = PIPELINE_TASK_OFFSET
        preprocess = {}
        if support is not None or support_labels is not None:
            preprocess["context"] = self._context(support, support_labels, projection_seed, timeout)
            preprocess["timeout"] = timeout
        return preprocess, {}, {} if top_k is None else {"top_k": top_k}

    def _features(self, example, timeout) -> torch.Tensor:
        """One example as a float vector [input_dim] (before normalisation)."""
        dim = self.model.config.input_dim
        if isinstance(example, (np.ndarray, torch.Tensor)) and np.ndim(example) == 1:
            if len(example) != dim:
                raise ValueError(f"A 1-D example must have input_dim = {dim} values, got {len(example)}.")
            return torch.as_tensor(np.asarray(example, dtype=np.float32))
        side = round(dim**0.5)
        if side * side != dim:
            raise ValueError(f"This learner takes vectors of {dim} values, not square images: pass 1-D arrays.")
        if isinstance(example, (np.ndarray, torch.Tensor)):
            from PIL import Image

            example = Image.fromarray(np.asarray(example))
        image = load_image_in_its_mode(example, timeout=timeout).convert("L").resize((side, side), 2)  # bilinear
        return torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(-1))

    def _context(self, support, support_labels, projection_seed, timeout) -> dict:
        if support is None or support_labels is None or len(support) != len(support_labels) or not len(support):
            raise ValueError(
                "in-context classification needs `support` (a list of examples) and `support_labels` (one label each)."
            )
        classes = list(dict.fromkeys(support_labels))  # in order of first appearance
        if len(classes) > self.model.config.num_classes:
            raise ValueError(
                f"The support set has {len(classes)} classes; this learner was meta-trained on tasks of at most "
                f"{self.model.config.num_classes}."
            )
        trained = getattr(self.model.config, "trained_sequence_length", None)
        if trained is not None and len(support) + 1 > trained:
            logger.warning_once(
                "The support set has %d examples: with the query, sequences of %d, longer than the %d this learner "
                "was meta-trained on. Its predictions past position %d are untested; a support set of at most %d "
                "examples stays within what it learned.", len(support), len(support) + 1, trained, trained, trained - 1
            )  # fmt: skip
        x = torch.stack([self._features(example, timeout) for example in support])  # [S, N_x]
        mean, std = x.mean(), x.std().clamp_min(1e-8)
        projection, _ = random_task(projection_seed, self.model.config.input_dim, self.model.config.num_classes)
        labels = torch.tensor([classes.index(label) for label in support_labels])
        return {"x": (x - mean) / std @ projection.T, "labels": labels, "mean": mean, "std": std,
                "projection": projection, "classes": classes}  # fmt: skip

    def _query(self, query, context, timeout) -> torch.Tensor:
        """One query as the learner reads it [N_x]: normalised with the support's statistics, then projected."""
        return (self._features(query, timeout) - context["mean"]) / context["std"] @ context["projection"].T

    def encode(self, queries, support, support_labels, projection_seed=None, timeout=None) -> dict:
        """What the learner reads for `queries` after the labelled `support` (the inputs `__call__` builds, for
        analysis and for comparing other learners on the same inputs): {"support": [S, N_x], "labels": [S] (ids),
        "queries": [Q, N_x], "classes": the label of each id}."""
        seed = PIPELINE_TASK_OFFSET if projection_seed is None else projection_seed
        context = self._context(support, support_labels, seed, timeout)
        x = context["x"]  # [S, N_x]
        encoded = [self._query(query, context, timeout) for query in queries]
        encoded = torch.stack(encoded) if encoded else x.new_zeros(0, x.shape[1])  # [Q, N_x]
        return {"support": x, "labels": context["labels"], "classes": context["classes"], "queries": encoded}

    def preprocess(self, query, context=None, timeout=None):
        if context is None:
            raise ValueError("Pass the labelled examples: classify(query, support=[...], support_labels=[...]).")
        q = self._query(query, context, timeout)
        inputs = torch.cat([context["x"], q[None]])[None]  # [1, S + 1, N_x]
        labels = torch.cat([context["labels"], torch.tensor([-100])])[None]  # the query's label is unknown
        return {"inputs": inputs.to(self.dtype or torch.float32), "labels": labels, "classes": context["classes"]}

    def _forward(self, model_inputs):
        classes = model_inputs.pop("classes")
        logits = self.model(**model_inputs).logits[0, -1]  # [C]: the prediction at the query
        return {"logits": logits, "classes": classes}

    def postprocess(self, model_outputs, top_k=1):
        classes = model_outputs["classes"]
        scores = model_outputs["logits"][: len(classes)].float().softmax(-1)  # only the support's classes exist
        top = scores.topk(min(top_k, len(classes)))
        return [{"label": classes[i], "score": s} for s, i in zip(top.values.tolist(), top.indices.tolist())]


__all__ = ["InContextClassificationPipeline"]
