"""What the cards of both families share: the model licence, the datasets' facts in card words, the BibTeX entries
(`CITATIONS`, once), the install line of the remote code, the plots section and the closing "About" and citation
sections with the provenance of the uploaded code."""

import os

from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..common.data import DATASETS
from ..common.run_files import SAMPLE_IMAGE

LICENSE = "apache-2.0"


def test_split_facts(dataset: str) -> tuple[str, str]:
    """(the Hub split the test images come from, words for the model-index's dataset name): the dataset's own test
    split, or, for a test set carved out of the training split (mnist-5k's 5,000 digits are MNIST *training*
    images), the training split, said so."""
    if dataset in DATASETS and DATASETS[dataset].official_test:
        return "test", ""
    return "train", " (test images held out of the training split)"


# The BibTeX entries the cards cite: each card cites the papers its model uses, and ttt-hf.
CITATIONS = {
    "mttt": """\
@article{sun2023learning,
  title   = {Learning to (Learn at Test Time)},
  author  = {Sun, Yu and Li, Xinhao and Dalal, Karan and Hsu, Chloe and Koyejo, Sanmi and Guestrin, Carlos and
             Wang, Xiaolong and Hashimoto, Tatsunori and Chen, Xinlei},
  journal = {arXiv preprint arXiv:2310.13807},
  year    = {2023}
}""",
    "gpicl": """\
@article{kirsch2022general,
  title   = {General-Purpose In-Context Learning by Meta-Learning Transformers},
  author  = {Kirsch, Louis and Harrison, James and Sohl-Dickstein, Jascha and Metz, Luke},
  journal = {arXiv preprint arXiv:2212.04458},
  year    = {2022}
}""",
    "ttt-layers": """\
@article{sun2024learning,
  title   = {Learning to (Learn at Test Time): RNNs with Expressive Hidden States},
  author  = {Sun, Yu and Li, Xinhao and Dalal, Karan and Xu, Jiarui and Vikram, Arjun and Zhang, Genghan and
             Dubois, Yann and Chen, Xinlei and Wang, Xiaolong and Koyejo, Sanmi and Hashimoto, Tatsunori and
             Guestrin, Carlos},
  journal = {arXiv preprint arXiv:2407.04620},
  year    = {2024}
}""",
}


# the plots a run's folder holds -> what a reader sees in them (the card shows every PNG of the folder)
PLOT_CAPTIONS = {
    "training_curves.png": "Training: the training loss and the validation loss against optimiser steps (left), and "
    "the validation top-1 and top-5 accuracy after each epoch (right).",
    "inner_losses.png": "Test-time training at work: per TTT layer, the inner loop's reconstruction loss on test "
    "images before the inner step (W_0) and after it (W_T), averaged over images and heads.",
    "in_context_accuracy.png": "In-context learning: accuracy against the number of labelled examples seen so far in "
    "the context, on tasks never seen in meta-training, next to simple learners trained on the same examples.",
    "meta_training_curves.png": "Meta-training: the loss against steps (left) and the accuracy after the last example "
    "on unseen tasks at each evaluation (right); a dashed line marks where bursty sequences gave way to fresh ones.",
}


REMOTE_CODE_PACKAGES = ("torch", "transformers", "pillow")  # all that the repos' own model code imports


def remote_code_install() -> str:
    """The pip command a visitor needs for the remote code: those packages with ttt-hf's own pins."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pins = {}
    for line in metadata.requires("ttt-hf") or []:
        requirement = Requirement(line)
        if requirement.marker is None and requirement.name.lower() in REMOTE_CODE_PACKAGES:
            pins[requirement.name.lower()] = str(requirement.specifier)
    words = [f'"{name}{pins[name]}"' if pins.get(name) else name for name in REMOTE_CODE_PACKAGES]
    return "pip install " + " ".join(words)


def ttt_hf_citation() -> str:
    from .. import __version__

    return f"""\
@software{{ttt_hf,
  title   = {{ttt-hf: test-time-training models for the Hugging Face ecosystem}},
  author  = {{{{ttt-hf contributors}}}},
  year    = {{2026}},
  version = {{{__version__}}}
}}"""


def code_origin(config: dict) -> str:
    """Which ttt-hf code was uploaded with the weights, from the provenance a publish writes into config.json."""
    if "ttt_hf_version" not in config:  # a folder kept for publishing later (the zoo's), not an uploaded repo
        return "written into config.json when the folder is published (`ttt_hf_version`, `ttt_hf_commit`)"
    version, commit = config.get("ttt_hf_version"), config.get("ttt_hf_commit")
    if version is None:
        return "not recorded (a run whose model code differs from the installed ttt-hf and did not record its own)"
    if commit is None:
        return (f"ttt-hf {version}; the commit is unknown (a checkout with local changes, or an install that does "
                "not record it)")  # fmt: skip
    return f"ttt-hf {version}, commit `{commit}`"


def about_section(config: dict, papers: list[str]) -> str:
    """The card's closing sections: independence, the code uploaded, and how to cite (`papers`: CITATIONS keys)."""
    entries = "\n\n".join([*(CITATIONS[key] for key in papers), ttt_hf_citation()])
    return f"""## About

This model was made with ttt-hf, an independent implementation of the papers it cites: neither their authors' code
nor endorsed by them. The model code in this repo: {code_origin(config)}.

## Citation

Cite the paper{"s" if len(papers) > 1 else ""} behind the model, and ttt-hf if you use its code or these weights:

```bibtex
{entries}
```"""


def is_repo_id(name: str | None) -> bool:
    if not name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def is_local_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.path.exists(os.path.expanduser(name))


def dataset_facts(name: str) -> tuple[str | None, str, str]:
    """(Hub dataset id or None, display name, provenance) of a `--dataset` value."""
    if name in DATASETS:
        facts = DATASETS[name]
        return facts.hub_id, facts.display_name, facts.provenance
    if is_local_path(name):
        label = os.path.basename(os.path.normpath(name)) or name
        return None, label, f"a local image folder (`imagefolder`, {label!r}); it has no Hub dataset id"
    if is_repo_id(name):
        return name, name, f"the Hub dataset `{name}`"
    return None, name, f"{name!r}"


def plural(count, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def plots_section(files) -> str:
    """Every plot among `files`, with what it shows ('' if none), ending in a blank line."""
    plots = [name for name in sorted(files) if name.endswith(".png") and name != SAMPLE_IMAGE]
    if not plots:
        return ""
    shown = [f"![{name[:-4].replace('_', ' ')}]({name})\n\n{PLOT_CAPTIONS.get(name, name)}" for name in plots]
    return "## Plots\n\n" + "\n\n".join(shown) + "\n\n"


__all__ = [
    "CITATIONS",
    "LICENSE",
    "PLOT_CAPTIONS",
    "about_section",
    "code_origin",
    "dataset_facts",
    "plots_section",
    "remote_code_install",
    "test_split_facts",
]
