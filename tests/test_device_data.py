"""The device-resident data path against the per-image path: same pixels without augmentation, same crop and flip
distributions with it, PIL's interpolation, reproducible draws, and a training run that picks it by itself."""

import json

import numpy as np
import PIL.Image
import pytest
import torch

from ttt_hf.common.data import load_image_dataset
from ttt_hf.modeling import TTTViTImageProcessor
from ttt_hf.vision import training
from ttt_hf.vision.device_data import (
    DeviceBatchCollator,
    IndexDataset,
    crop_and_flip,
    crop_boxes,
    decode_sources,
    decode_split,
    device_data_plan,
    normalisation_table,
)
from ttt_hf.vision.transforms import EvalTransform, TrainTransform, crop_box

from .test_training import COMMON, TINY_MODEL


def _collator(split, processor, size, **augmentation):
    images, labels = decode_split(split, processor)
    return DeviceBatchCollator(images, labels, normalisation_table(processor), size, **augmentation)


@pytest.mark.parametrize(
    "dataset, size, crop_fraction",
    [("digits", 8, 1.0), ("mnist-5k", 28, 1.0), ("mnist-5k", 14, 1.0), ("mnist-5k", 24, 224 / 256)],
)
def test_without_augmentation_the_pixels_are_the_image_processors(dataset, size, crop_fraction):
    """Bit for bit: the processor's own resize and centre crop when decoding, its normalisation as a table."""
    split = load_image_dataset(dataset, max_eval_samples=300)["test"]
    processor = TTTViTImageProcessor.for_image_size(size, 1, crop_fraction=crop_fraction)
    expected = torch.stack(EvalTransform(processor)({"image": list(split["image"])})["pixel_values"])
    batch = _collator(split, processor, size)([{"index": i} for i in range(len(split))])
    assert batch["pixel_values"].dtype == torch.float32 and torch.equal(batch["pixel_values"], expected)
    assert batch["labels"].tolist() == list(split["label"])


def test_normalisation_table_of_a_colour_processor_with_its_own_mean_and_std():
    processor = TTTViTImageProcessor.for_image_size(8, 3, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25])
    table = normalisation_table(processor)  # [3, 256]
    value = np.full((3, 1, 1), 200, np.uint8)
    expected = processor.normalize(
        processor.rescale(value, processor.rescale_factor), [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
    )
    assert table.shape == (3, 256) and torch.equal(table[:, 200], torch.from_numpy(expected[:, 0, 0]))


@pytest.mark.parametrize("height, width, scale", [(28, 28, (0.05, 1.0)), (28, 28, (0.5, 1.0)), (8, 12, (0.3, 1.0))])
def test_crop_area_and_aspect_distributions_match_the_per_image_path(height, width, scale):
    ratio, n = (3 / 4, 4 / 3), 20_000
    rng = np.random.default_rng(0)
    per_image = np.array([crop_box(height, width, scale, ratio, rng) for _ in range(n)], dtype=np.float64)
    batched = crop_boxes(height, width, scale, ratio, torch.rand(n, 22, generator=torch.Generator().manual_seed(0)))
    batched = batched.numpy()
    for boxes in (per_image, batched):  # every box lies inside the image
        left, top, w, h = boxes.T
        assert (w >= 1).all() and (h >= 1).all() and (left >= 0).all() and (top >= 0).all()
        assert (left + w <= width).all() and (top + h <= height).all()

    def largest_cdf_gap(a, b):  # the two-sample Kolmogorov-Smirnov statistic
        values = np.union1d(a, b)
        cdf = [np.searchsorted(np.sort(x), values, side="right") / len(x) for x in (a, b)]
        return np.abs(cdf[0] - cdf[1]).max()

    def features(boxes):  # area share, log aspect ratio, horizontal and vertical centre
        left, top, w, h = boxes.T
        return w * h / (height * width), np.log(w / h), (left + w / 2) / width, (top + h / 2) / height

    gaps = [largest_cdf_gap(a, b) for a, b in zip(features(per_image), features(batched))]
    assert max(gaps) < 0.02, gaps  # the 1 % critical value of the KS test at n = 20,000 each: 0.016


def test_flip_rate_matches_the_per_image_path():
    """Both paths mirror half the images: an asymmetric image through each, crop off, counted."""
    picture = np.zeros((8, 8), np.uint8)
    picture[:, :2] = 255  # bright on the left
    n = 4000
    processor = TTTViTImageProcessor.for_image_size(8, 1, crop_fraction=1.0)
    per_image = TrainTransform(processor, random_resized_crop=False, horizontal_flip=True, rand_augment=False)
    flipped_pil = 0
    for i in range(n):
        image = PIL.Image.fromarray(picture)
        out = per_image.augment(image, np.random.default_rng(i))
        flipped_pil += int(np.asarray(out)[0, -1] == 255)
    images = torch.from_numpy(picture)[None, None].expand(n, 1, 8, 8).contiguous()
    collator = DeviceBatchCollator(images, torch.zeros(n, dtype=torch.long), normalisation_table(processor), 8,
                                   horizontal_flip=True)  # fmt: skip
    pixels = collator([{"index": i} for i in range(n)])["pixel_values"]
    flipped_device = int((pixels[:, 0, 0, -1] == 1.0).sum())
    assert abs(flipped_pil / n - 0.5) < 0.03 and abs(flipped_device / n - 0.5) < 0.03
    original = torch.from_numpy(picture).float()[None] / 127.5 - 1  # [1, 8, 8] in [-1, 1]
    mirrored = pixels[:, 0, 0, -1] == 1.0
    assert torch.equal(pixels[mirrored], original.flip(-1).expand(flipped_device, 1, 8, 8))
    assert torch.equal(pixels[~mirrored], original.expand(n - flipped_device, 1, 8, 8))


@pytest.mark.parametrize("size", [28, 14, 9])
def test_a_crop_is_pils_bilinear_resize_of_the_same_box(size):
    """PIL's `resize(box=..., BILINEAR)`, growing or shrinking (antialiased), to within one grey level (PIL rounds to
    whole levels between its horizontal and vertical passes), mirrored when flipped."""
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    image = PIL.Image.fromarray(picture)
    boxes = torch.tensor([[0, 0, 28, 28], [3, 5, 20, 17], [10, 0, 18, 28], [7, 7, 9, 9]], dtype=torch.float64)
    flip = torch.tensor([False, True, False, True])
    out = crop_and_flip(torch.from_numpy(picture)[None, None].expand(4, 1, 28, 28), boxes, flip, size)
    for (left, top, w, h), mirrored, got in zip(boxes.long().tolist(), flip, out[:, 0]):
        expected = np.array(image.resize((size, size), PIL.Image.BILINEAR, box=(left, top, left + w, top + h)))
        expected = torch.from_numpy(expected[:, ::-1].copy() if mirrored else expected).long()
        assert (got - expected).abs().max() <= 1 and (got - expected).abs().float().mean() < 0.3
    if size == 28:
        assert torch.equal(out[0, 0], torch.from_numpy(picture).long())  # the whole image: exactly itself


def test_training_crops_come_from_the_images_at_their_own_resolution():
    """A 14x14 model on 28x28 images: evaluation sees the processor's 14x14 images; training crops are cut from the
    28x28 originals (as the per-image path cuts them), not from the 14x14 copies."""
    split = load_image_dataset("mnist-5k", max_train_samples=64)["train"]
    processor = TTTViTImageProcessor.for_image_size(14, 1, crop_fraction=1.0)
    images, labels = decode_split(split, processor)
    sources = decode_sources(split, processor)
    assert images.shape == (64, 1, 14, 14) and sources.shape == (64, 1, 28, 28)
    assert torch.equal(sources[5, 0], torch.from_numpy(np.array(split[5]["image"])))
    collator = DeviceBatchCollator(images, labels, normalisation_table(processor), 14, sources=sources,
                                   random_resized_crop=True, scale=(0.5, 1.0))  # fmt: skip
    features = [{"index": i} for i in range(64)]
    boxes, _ = collator.draws(torch.arange(64), 28, 28)
    assert boxes[:, 2].max() <= 28 and boxes[:, 2].max() > 14  # boxes in the originals' pixels
    expected = crop_and_flip(sources, boxes, None, 14)
    channel = torch.zeros(1, dtype=torch.long)[None, :, None, None]
    assert torch.equal(collator(features)["pixel_values"], normalisation_table(processor)[channel, expected])
    plain = DeviceBatchCollator(images, labels, normalisation_table(processor), 14, sources=sources)
    assert torch.equal(plain(features)["pixel_values"], normalisation_table(processor)[channel, images.long()])


def test_draws_are_a_function_of_seed_epoch_and_batch():
    images = torch.randint(0, 256, (64, 1, 12, 12), dtype=torch.uint8)
    collator = DeviceBatchCollator(images, torch.zeros(64, dtype=torch.long), torch.linspace(-1, 1, 256)[None], 12,
                                   random_resized_crop=True, horizontal_flip=True, seed=3)  # fmt: skip
    features = [{"index": i} for i in range(0, 64, 2)]
    first = collator(features)["pixel_values"]
    assert torch.equal(collator(features)["pixel_values"], first)  # the same batch again: the same crops
    assert not torch.equal(collator(features[1:] + features[:1])["pixel_values"], first.roll(-1, 0))  # other batch
    collator.set_epoch(1)
    assert not torch.equal(collator(features)["pixel_values"], first)  # a new epoch: new draws


def test_plan_applies_where_it_can_and_says_why_not():
    splits = {"train": range(1000), "validation": range(100)}
    assert device_data_plan(True, splits, 28, 1, rand_augment=False).applies
    assert "RandAugment" in device_data_plan(True, splits, 28, 1, rand_augment=True).reason
    assert "switched off" in device_data_plan(False, splits, 28, 1, rand_augment=False).reason
    mixed = load_image_dataset("mnist-5k", max_train_samples=20)["train"]
    assert device_data_plan(True, {"train": mixed}, 28, 1, rand_augment=False, crop=True).applies
    resized = mixed.map(lambda row, i: {"image": row["image"].resize((20, 20)) if i % 2 else row["image"]},
                        with_indices=True)  # fmt: skip
    assert device_data_plan(True, {"train": resized}, 28, 1, rand_augment=False).applies  # no crop: one geometry
    two_sizes = device_data_plan(True, {"train": resized}, 28, 1, rand_augment=False, crop=True)
    assert not two_sizes.applies and "2 sizes" in two_sizes.reason
    too_big = device_data_plan(True, {"train": range(2_000_000)}, 224, 3, rand_augment=False)
    assert not too_big.applies and "GiB" in too_big.reason
    assert len(IndexDataset(5, offset=10)) == 5 and IndexDataset(5, offset=10)[4] == {"index": 14}
    with pytest.raises(IndexError):
        IndexDataset(5)[5]


def test_training_takes_the_device_path_by_itself_and_matches_the_per_image_path_without_augmentation(tmp_path):
    """Same data, same model, no augmentation: the two paths give the same batches, so the same run."""
    flags = [*COMMON, "--max_train_samples", "256", "--num_train_epochs", "1", "--per_device_train_batch_size", "32",
             "--save_strategy", "no", "--plots", "false", "--random_resized_crop", "false"]  # fmt: skip
    device = training.main([*flags, "--output_dir", str(tmp_path / "device")])
    per_image = training.main([*flags, "--output_dir", str(tmp_path / "pil"), "--device_data", "false"])
    assert device["test_accuracy"] == per_image["test_accuracy"]
    assert device["train_loss"] == pytest.approx(per_image["train_loss"], rel=1e-5)
    arguments = json.loads((tmp_path / "device" / "training_args.json").read_text())
    assert arguments["data"]["device_data"] is True and TINY_MODEL in arguments["model"]["config_overrides"]
