"""Tests of ttt_hf.transforms: RandAugment ops, crops, train/eval transforms and the collators."""

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from PIL import ImageOps
from ttt_hf.modeling import TTTViTImageProcessor

from ttt_hf.transforms import (
    RAND_AUGMENT_OPS,
    EvalTransform,
    MixupCollator,
    RandAugment,
    TrainTransform,
    collate_images,
    random_resized_crop,
)


def noise(size=(32, 32), mode="RGB", seed=0) -> PILImage.Image:
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    return PILImage.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode)


def normalised(image: PILImage.Image) -> torch.Tensor:
    """What the processor makes of a PIL image already at the input size: [C, H, W] in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array / 127.5 - 1)


@pytest.fixture(scope="module")
def rgb():
    return TTTViTImageProcessor.for_image_size(32)


@pytest.fixture(scope="module")
def grey():
    return TTTViTImageProcessor.for_image_size(32, num_channels=1)


def apply_op(name: str, image: PILImage.Image, magnitude: int = 10, seed: int = 0) -> np.ndarray:
    return np.asarray(RandAugment(num_ops=1, magnitude=magnitude, ops=[name])(image, np.random.default_rng(seed)))


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("name", RAND_AUGMENT_OPS)
def test_every_op_keeps_size_and_mode(name, mode):
    image = noise((40, 24), mode)
    out = RandAugment(num_ops=1, ops=[name])(image, np.random.default_rng(0))
    assert (out.size, out.mode) == (image.size, mode)


def test_ops_at_full_strength():
    image = noise((40, 24), "L")
    x = np.asarray(image).astype(np.int64)
    assert np.array_equal(apply_op("Identity", image), x)
    assert np.array_equal(apply_op("AutoContrast", image), np.asarray(ImageOps.autocontrast(image)))
    assert np.array_equal(apply_op("Equalize", image), np.asarray(ImageOps.equalize(image)))
    assert np.array_equal(apply_op("Solarize", image), 255 - x)  # threshold 0: every pixel inverted
    assert np.array_equal(apply_op("Posterize", image), x & 0xF0)  # 4 bits kept
    brightness = apply_op("Brightness", image).astype(np.int64)  # factor 1.9 or 0.1
    assert any(np.abs(brightness - np.clip(x * f, 0, 255)).max() <= 1 for f in (1.9, 0.1))
    rotated = [np.asarray(image.rotate(d, PILImage.Resampling.NEAREST, fillcolor=128)) for d in (30, -30)]
    assert any(np.array_equal(apply_op("Rotate", image, seed=s), r) for r in rotated for s in range(4))
    shift = round(150 / 331 * 40)  # 18 of 40 columns, filled with grey
    for seed in range(4):
        out = apply_op("TranslateX", image, seed=seed)
        left = np.array_equal(out[:, : 40 - shift], x[:, shift:]) and (out[:, 40 - shift :] == 128).all()
        right = np.array_equal(out[:, shift:], x[:, : 40 - shift]) and (out[:, :shift] == 128).all()
        assert left or right
    sheared = apply_op("ShearX", image)
    assert np.array_equal(sheared[12], x[12])  # the centre row stays, the top and bottom move by 0.3 * 12 px
    assert (sheared[0] == 128).sum() in (3, 4) and (sheared[-1] == 128).sum() in (3, 4)


def test_magnitude_scales_strength():
    image = noise((40, 24), "L")
    x = np.asarray(image).astype(np.int64)
    assert np.array_equal(apply_op("Solarize", image, magnitude=5), np.where(x >= 127.5, 255 - x, x))
    assert np.array_equal(apply_op("Posterize", image, magnitude=5), x & 0xFC)  # 8 - round(2) = 6 bits
    assert np.array_equal(apply_op("Rotate", image, magnitude=0), x)


def test_rand_augment_validates_and_num_ops_zero_is_identity():
    with pytest.raises(ValueError, match="Cutout"):
        RandAugment(ops=["Rotate", "Cutout"])
    with pytest.raises(ValueError, match="magnitude=11"):
        RandAugment(magnitude=11)
    image = noise()
    assert np.array_equal(np.asarray(RandAugment(num_ops=0)(image, np.random.default_rng(0))), np.asarray(image))


def test_random_resized_crop():
    image = noise((40, 30))
    out = random_resized_crop(image, (16, 20), (0.05, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
    assert out.size == (20, 16)
    again = random_resized_crop(image, (16, 20), (0.05, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
    assert np.array_equal(np.asarray(out), np.asarray(again))
    whole = random_resized_crop(image, (30, 40), (1.0, 1.0), (4 / 3, 4 / 3), np.random.default_rng(0))
    assert np.array_equal(np.asarray(whole), np.asarray(image))
    # a 100x10 strip admits no crop of the allowed ratios: centre crop 13x10 (ratio 4/3)
    strip = noise((100, 10))
    out = random_resized_crop(strip, (8, 8), (0.05, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
    assert np.array_equal(
        np.asarray(out), np.asarray(strip.resize((8, 8), PILImage.Resampling.BILINEAR, box=(43, 0, 56, 10)))
    )


def test_train_transform_outputs(rgb, grey):
    images = [noise((50, 40)), noise((20, 70), "L"), noise((32, 32)).convert("RGBA"), noise((30, 30)).convert("P")]
    for processor, channels in ((rgb, 3), (grey, 1)):
        out = TrainTransform(processor)({"image": images, "label": [3, 1, 4, 1]})
        assert out["labels"] == [3, 1, 4, 1]
        for pixels in out["pixel_values"]:
            assert pixels.shape == (channels, 32, 32) and pixels.dtype == torch.float32
            assert -1 <= pixels.min() < pixels.max() <= 1


def test_train_transform_is_a_function_of_seed_epoch_and_image(rgb):
    images = [noise(seed=s) for s in range(4)]
    batch = {"image": images, "label": [0, 1, 2, 3]}
    first, second, other = (TrainTransform(rgb, seed=seed)(batch)["pixel_values"] for seed in (0, 0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))
    # the same image gets the same draws whatever batch it is in and in whichever order ...
    transform = TrainTransform(rgb, seed=0)
    alone = transform({"image": images[2:3]})["pixel_values"][0]
    reordered = transform({"image": images[::-1]})["pixel_values"]
    assert torch.equal(alone, first[2]) and torch.equal(reordered[1], first[2])
    # ... and new draws in a new epoch
    transform.set_epoch(1)
    assert not torch.equal(transform({"image": images[2:3]})["pixel_values"][0], first[2])


def test_every_augmentation_can_be_switched_off(rgb):
    images = [noise(seed=s) for s in range(24)]
    full_crop = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}  # the whole 32x32 image: geometry is the identity
    plain = TrainTransform(rgb, **full_crop, horizontal_flip=False, rand_augment=False)({"image": images})
    assert all(torch.allclose(p, normalised(i), atol=1e-6) for p, i in zip(plain["pixel_values"], images))
    flipped = TrainTransform(rgb, **full_crop, rand_augment=False)({"image": images})["pixel_values"]
    is_flipped = [torch.allclose(p, normalised(i).flip(-1), atol=1e-6) for p, i in zip(flipped, images)]
    assert all(f or torch.allclose(p, normalised(i), atol=1e-6) for f, p, i in zip(is_flipped, flipped, images))
    assert 0 < sum(is_flipped) < len(images)
    solarize = RandAugment(num_ops=1, ops=["Solarize"])
    inverted = TrainTransform(rgb, **full_crop, horizontal_flip=False, rand_augment=solarize)({"image": images})
    assert all(torch.allclose(p, -normalised(i), atol=1e-6) for p, i in zip(inverted["pixel_values"], images))
    # without the random crop, the processor's own resize and centre crop bring images to size
    large = [noise((64, 48), seed=s) for s in range(3)]
    no_crop = TrainTransform(rgb, random_resized_crop=False, horizontal_flip=False, rand_augment=False)
    expected = rgb(large, return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.stack(no_crop({"image": large})["pixel_values"]), expected)


def test_eval_transform_equals_the_processor(rgb, grey):
    images = [noise((80, 50)), noise((37, 60), "L")]
    for processor in (rgb, grey):
        out = EvalTransform(processor)({"image": images, "label": [0, 1]})
        assert torch.equal(torch.stack(out["pixel_values"]), processor(images, return_tensors="pt")["pixel_values"])
        assert out["labels"] == [0, 1]
    # resize the short side to 37 (32 * 256 / 224), centre-crop 32: a 37x37 image loses 2 px on the top-left
    square = noise((37, 37))
    expected = normalised(square.crop((2, 2, 34, 34)))
    assert torch.allclose(EvalTransform(rgb)({"image": [square]})["pixel_values"][0], expected, atol=1e-6)


def test_transforms_with_datasets(grey):
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    dataset = Dataset.from_dict(
        {"image": [noise((28, 28), "L", s) for s in range(4)], "label": [0, 1, 0, 1]}, features
    )
    example = dataset.with_transform(TrainTransform(grey))[1]
    assert example["pixel_values"].shape == (1, 32, 32) and example["labels"] == 1
    batch = collate_images([dataset.with_transform(EvalTransform(grey))[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 1, 32, 32)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 0, 1]


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.transform({"image": [noise(seed=index)]})["pixel_values"][0]


def test_dataloader_workers_augment_as_the_main_process(rgb):
    transform = TrainTransform(rgb, seed=3)
    transform.set_epoch(2)
    in_workers = list(torch.utils.data.DataLoader(_Indexed(transform), batch_size=None, num_workers=2))
    in_main = [_Indexed(transform)[i] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(in_workers, in_main))
    assert len({tuple(x.flatten()[:8].tolist()) for x in in_main}) == 4


def test_collate_images_without_labels():
    batch = collate_images([{"pixel_values": torch.zeros(3, 4, 4)}, {"pixel_values": torch.ones(3, 4, 4)}])
    assert list(batch) == ["pixel_values"] and batch["pixel_values"].shape == (2, 3, 4, 4)


def test_mixup_collator():
    features = [{"pixel_values": torch.full((1, 2, 2), float(i)), "labels": i % 3} for i in range(6)]
    batch = MixupCollator(num_labels=3, alpha=0.2, seed=0)(features)
    labels, pixels = batch["labels"], batch["pixel_values"]
    assert labels.shape == (6, 3) and labels.dtype == torch.float32
    assert torch.allclose(labels.sum(-1), torch.ones(6))
    lam = labels[0, 0].item()  # example 0 (class 0) is mixed with example 5 (class 2)
    assert 0.5 <= lam <= 1 and labels[0, 2].item() == pytest.approx(1 - lam, abs=1e-6)
    previous = torch.tensor([5.0, 0, 1, 2, 3, 4])
    expected = lam * torch.arange(6.0) + (1 - lam) * previous
    assert torch.allclose(pixels[:, 0, 0, 0], expected, atol=1e-6)
    again = MixupCollator(num_labels=3, alpha=0.2, seed=0)(features)
    assert torch.equal(again["labels"], labels) and torch.equal(again["pixel_values"], pixels)
    lams = {MixupCollator(num_labels=3, seed=s)(features)["labels"][0, 0].item() for s in range(5)}
    assert len(lams) == 5
    with pytest.raises(ValueError, match="alpha"):
        MixupCollator(num_labels=3, alpha=0)
