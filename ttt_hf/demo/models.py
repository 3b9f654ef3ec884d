"""The models the demo offers, loaded by `from_pretrained` (from model_cards/ or the Hub) the first time they are
picked, and kept."""

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..zoo.registry import ZOO, folder, is_trained


@dataclass
class DemoModels:
    """Shown name -> where it loads from (a folder or a Hub repo id), per tab."""

    classifiers: dict[str, str] = field(default_factory=dict)
    learners: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.classifiers and not self.learners:
            raise ValueError(
                "No models to show: train zoo entries (`ttt-hf zoo list`) or pass --models with folders or Hub ids."
            )


def _is_learner(source: str) -> bool:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source).model_type == "gpicl"


def resolve_models(names=(), model_cards=None) -> DemoModels:
    """`names`: zoo entries (their stored folders), run folders or Hub repo ids; none: every stored zoo entry. The
    in-context learners go to the second tab, the classifiers to the first."""
    classifiers, learners = {}, {}
    if not names:
        names = [name for name in ZOO if is_trained(name, model_cards)]
    for name in names:
        if name in ZOO:
            if not is_trained(name, model_cards):
                raise FileNotFoundError(
                    f"{name} is a zoo entry that is not trained here ({folder(name, model_cards)} has no results): "
                    f"`ttt-hf zoo train {name}` then `ttt-hf zoo store {name} outputs/zoo/{name}`, or name another."
                )
            source, in_context = str(folder(name, model_cards)), ZOO[name].in_context
        else:
            source = name
            if not Path(name).is_dir() and name.count("/") != 1:
                raise ValueError(f"{name!r} is neither a zoo entry (`ttt-hf zoo list`), a folder nor a Hub repo id.")
            in_context = _is_learner(source)
        (learners if in_context else classifiers)[name] = source
    return DemoModels(classifiers, learners)


def _zoo_entry(name: str):
    """The zoo entry a zoo name or a Hub id ending in one names; None for other models."""
    return ZOO.get(name.split("/")[-1])


def trained_on(name: str) -> str | None:
    """The dataset a zoo model was trained on; None for others."""
    entry = _zoo_entry(name)
    return None if entry is None else entry.dataset


def about(name: str) -> str:
    """What a zoo model (by zoo name or Hub id ending in one) is and what it expects, in words; '' for others."""
    from ..common.data import DATASETS

    entry = _zoo_entry(name)
    if entry is None:
        return ""
    facts = DATASETS[entry.dataset]
    return f"**{name}**: {entry.description}, trained on {facts.display_name}; it expects {facts.content}."


@cache
def classifier(source: str):
    """`pipeline("image-classification")` of a TTT-ViT classifier (importing ttt_hf registered its classes)."""
    from transformers import pipeline

    return pipeline("image-classification", model=source)


@cache
def learner(source: str):
    """`pipeline("in-context-classification")` of a meta-trained GPICL learner."""
    from transformers import pipeline

    return pipeline("in-context-classification", model=source)
