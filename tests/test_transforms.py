"""Tests of ttt_hf.vision.transforms: RandAugment ops, crops, train/eval transforms and the collators."""

import hashlib
import random

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from PIL import ImageOps

from ttt_hf.modeling import TTTViTImageProcessor
from ttt_hf.vision.randaugment import RAND_AUGMENT_OPS, RandAugment
from ttt_hf.vision.transforms import (
    EvalTransform,
    MixupCollator,
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


# RandAugment: the paper's code runs big_vision's pp/autoaugment.py (TF's autoaugment.py), randaug(2, 10). The expected
# values below write its formulas out in NumPy: float steps in float32, blends and casts truncating, TF's nearest-pixel
# sampling rounding halves away from zero.
OFFICIAL_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
    "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd",
)  # fmt: skip
ALL_VALUES = np.arange(256, dtype=np.uint8).reshape(16, 16)  # a grey image with every value once


def pattern(height: int, width: int, channels: int = 3) -> np.ndarray:
    """A deterministic uint8 image [H, W, C] with gradients and edges."""
    i, j, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    return ((i * 37 + j * 11 + c * 85 + (i * j) % 23 * 5) % 256).astype(np.uint8)


def augment(name: str, image, magnitude: float = 10, seed: int = 0, **kwargs) -> np.ndarray:
    """One op of RandAugment on an image (array or PIL), as an array."""
    rand_augment = RandAugment(num_ops=1, magnitude=magnitude, ops=[name], **kwargs)
    return np.asarray(rand_augment(image, np.random.default_rng(seed)))


def outcomes(name: str, image, magnitude: float = 10, seeds: int = 16, **kwargs) -> list[np.ndarray]:
    """The distinct outputs of an op over `seeds` seeds, sorted by their bytes (a random sign gives two)."""
    outputs = {out.tobytes(): out for out in (augment(name, image, magnitude, s, **kwargs) for s in range(seeds))}
    return [outputs[key] for key in sorted(outputs)]


def same_outcomes(got: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    return sorted(e.tobytes() for e in expected) == [g.tobytes() for g in got]


def blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    """big_vision's blend: image1 + factor (image2 - image1) in float32, clipped when extrapolating, truncated."""
    blended = image1.astype(np.float32) + np.float32(factor) * (image2.astype(np.float32) - image1.astype(np.float32))
    return (blended if 0 < factor < 1 else np.clip(blended, 0, 255)).astype(np.uint8)


def sample(x: np.ndarray, src_row: np.ndarray, src_col: np.ndarray, fill: int = 128) -> np.ndarray:
    """Output pixel (row, col) takes input (src_row, src_col), rounded as C++ std::round; `fill` outside."""
    rows, cols = (np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5)).astype(int) for v in (src_row, src_col))
    inside = (rows >= 0) & (rows < x.shape[0]) & (cols >= 0) & (cols < x.shape[1])
    out = np.full_like(x, fill)
    out[inside] = x[rows[inside], cols[inside]]
    return out


def grid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.indices(x.shape[:2], dtype=np.float32)


def test_ops_are_the_official_sixteen_in_order():
    assert RAND_AUGMENT_OPS == OFFICIAL_OPS


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("name", RAND_AUGMENT_OPS)
def test_every_op_keeps_size_and_mode(name, mode):
    image = noise((40, 24), mode)
    out = RandAugment(num_ops=1, ops=[name])(image, np.random.default_rng(0))
    assert (out.size, out.mode) == (image.size, mode)
    array = np.asarray(image)
    out = RandAugment(num_ops=1, ops=[name])(array, np.random.default_rng(0))
    assert (out.shape, out.dtype) == (array.shape, np.uint8)


def test_invert_solarize_solarize_add_posterize():
    x = ALL_VALUES.astype(np.int64)
    assert np.array_equal(augment("Invert", ALL_VALUES), 255 - x)
    # Solarize: threshold int(level / 10 * 256). At level 10 that is 256, which TF converts to the image's uint8: 0,
    # so every pixel is inverted (the official code's behaviour, not the no-op a threshold of 256 suggests).
    assert np.array_equal(augment("Solarize", ALL_VALUES), 255 - x)
    assert np.array_equal(augment("Solarize", ALL_VALUES, magnitude=5), np.where(x < 128, x, 255 - x))
    assert np.array_equal(augment("Solarize", ALL_VALUES, magnitude=9), np.where(x < 230, x, 255 - x))
    # SolarizeAdd: int(level / 10 * 110) added below 128, clipped
    assert np.array_equal(augment("SolarizeAdd", ALL_VALUES), np.where(x < 128, np.minimum(x + 110, 255), x))
    assert np.array_equal(augment("SolarizeAdd", ALL_VALUES, magnitude=5), np.where(x < 128, x + 55, x))
    # Posterize keeps int(level / 10 * 4) bits; TF clamps the shift to 7, so 0 bits (levels 0-2) keeps the top one
    assert np.array_equal(augment("Posterize", ALL_VALUES), x & 0xF0)
    assert np.array_equal(augment("Posterize", ALL_VALUES, magnitude=7), x & 0xC0)  # int(2.8) = 2 bits
    assert np.array_equal(augment("Posterize", ALL_VALUES, magnitude=2), x & 0x80)
    assert np.array_equal(augment("Posterize", ALL_VALUES, magnitude=3), x & 0x80)  # 1 bit


def test_enhance_factors_and_truncating_blend():
    # factor (level / 10) * 1.8 + 0.1, with no random sign: 1.9 at level 10, 0.64 at level 3, 1.0 at level 5
    x = ALL_VALUES
    brightness = augment("Brightness", x)
    assert np.array_equal(brightness, np.clip(np.float32(1.9) * x.astype(np.float32), 0, 255).astype(np.uint8))
    assert brightness.ravel()[[1, 100, 134, 135]].tolist() == [1, 190, 254, 255]  # truncated: 1.9, 254.6
    dimmed = augment("Brightness", x, magnitude=3)
    assert np.array_equal(dimmed, (np.float32(0.64) * x.astype(np.float32)).astype(np.uint8))
    assert dimmed.ravel()[[100, 255]].tolist() == [64, 163]  # 163.2
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        assert np.array_equal(augment(name, x, magnitude=5), x)
    # Color: blend from TF's grey, trunc((0.2989 r + 0.587 g + 0.114 b) / 255 * 255.5) in float32
    rgb = pattern(224, 224)
    f = rgb.astype(np.float32) * np.float32(1 / 255)
    w = np.array([0.2989, 0.5870, 0.1140], np.float32)
    grey = ((f[..., 0] * w[0] + f[..., 1] * w[1] + f[..., 2] * w[2]) * np.float32(255.5)).astype(np.uint8)
    grey = np.repeat(grey[..., None], 3, -1)
    assert np.array_equal(augment("Color", rgb), blend(grey, rgb, 1.9))
    assert np.array_equal(augment("Color", rgb, magnitude=3), blend(grey, rgb, 0.64))
    # a grey image is RGB with equal channels, whose grey is itself: Color leaves it
    assert np.array_equal(augment("Color", x), x) and np.array_equal(augment("Color", x, magnitude=3), x)


def test_contrast_blends_towards_pixel_count_over_256():
    # The official "mean" sums the 256-bin histogram and divides by 256: pixel count / 256, not the mean grey level
    # (a bug in the official code, reproduced): 196 at 224x224, 3 at 28x28
    rgb = pattern(224, 224)
    assert np.array_equal(augment("Contrast", rgb), blend(np.full_like(rgb, 196), rgb, 1.9))
    assert np.array_equal(augment("Contrast", rgb, magnitude=3), blend(np.full_like(rgb, 196), rgb, 0.64))
    values = np.array([[0, 190, 200, 255]], np.uint8)
    assert augment("Contrast", np.tile(values, (224, 56)))[0, :4].tolist() == [0, 184, 203, 255]  # 184.6, 203.6
    grey = pattern(28, 28, 1)[..., 0]
    assert np.array_equal(augment("Contrast", grey), blend(np.full_like(grey, 3), grey, 1.9))


def test_sharpness():
    # blend with PIL's SMOOTH filter [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (truncated), the border kept
    dot = np.zeros((5, 5), np.uint8)
    dot[2, 2] = 100  # smoothed: 500 / 13 = 38.46 -> 38 at the dot, 100 / 13 = 7.69 -> 7 around it
    expected = np.zeros((5, 5), np.uint8)
    expected[2, 2] = 155  # 38 + 1.9 (100 - 38) = 155.8; around it 7 + 1.9 (0 - 7) < 0
    assert np.array_equal(augment("Sharpness", dot), expected)
    expected[1:4, 1:4], expected[2, 2] = 2, 77  # 7 + 0.64 (0 - 7) = 2.5; 38 + 0.64 (100 - 38) = 77.7
    assert np.array_equal(augment("Sharpness", dot, magnitude=3), expected)
    rgb = pattern(40, 32).astype(np.int64)
    window = sum(k * rgb[i : i + 38, j : j + 30] for (i, j), k in np.ndenumerate([[1, 1, 1], [1, 5, 1], [1, 1, 1]]))
    degenerate = rgb.copy()
    degenerate[1:-1, 1:-1] = window // 13  # exact; TF's float32 sum can round across an integer (the hash test)
    out = augment("Sharpness", rgb.astype(np.uint8))
    assert np.abs(out.astype(np.int64) - blend(degenerate, rgb, 1.9)).max() <= 1
    assert np.array_equal(out[[0, -1]], rgb[[0, -1]]) and np.array_equal(out[:, [0, -1]], rgb[:, [0, -1]])


def test_autocontrast_and_equalize_per_channel():
    rgb = pattern(40, 32)
    rgb[..., 0] = rgb[..., 0] // 4 + 60  # red in [60, 123]
    rgb[..., 2] = 77  # blue flat: stays
    expected = rgb.copy()
    for k in (0, 1):
        lo, hi = np.float32(rgb[..., k].min()), np.float32(rgb[..., k].max())
        scale = np.float32(255) / (hi - lo)
        stretched = rgb[..., k].astype(np.float32) * scale + -lo * scale
        expected[..., k] = np.clip(stretched, 0, 255).astype(np.uint8)
    out = augment("AutoContrast", rgb)
    assert np.array_equal(out, expected) and out[..., 0].min() == 0 and out[..., 0].max() >= 254
    grey = rgb[..., 0]
    assert np.array_equal(augment("AutoContrast", grey), expected[..., 0])
    # in float32, 7 * (255 / 7) = 254.99998: the top value of 0-7 becomes 254, as in the official code
    stretched = augment("AutoContrast", np.arange(8, dtype=np.uint8)[None])[0]
    assert stretched.tolist() == [0, 36, 72, 109, 145, 182, 218, 254]
    # Equalize: step = (pixels - count of the top value) // 255, lut[v] = (count below v + step // 2) // step: PIL's
    rgb = pattern(224, 224)
    expected = rgb.copy()
    for k in range(3):
        histogram = np.bincount(rgb[..., k].ravel(), minlength=256)
        step = (histogram.sum() - histogram[np.nonzero(histogram)[0][-1]]) // 255
        lut = (np.concatenate([[0], np.cumsum(histogram)[:-1]]) + step // 2) // step
        expected[..., k] = np.clip(lut, 0, 255)[rgb[..., k]]
    assert np.array_equal(augment("Equalize", rgb), expected)
    assert np.array_equal(augment("Equalize", rgb), np.asarray(ImageOps.equalize(PILImage.fromarray(rgb))))
    grey = np.asarray(noise((28, 28), "L"))
    assert np.array_equal(augment("Equalize", grey), np.asarray(ImageOps.equalize(PILImage.fromarray(grey))))
    assert np.array_equal(augment("Equalize", grey[:8, :8]), grey[:8, :8])  # 64 pixels: step 0, unchanged


def test_shear_is_not_centred():
    # ShearX: output (col, row) takes input (col + s row, row), s = +-(level / 10) * 0.3 in float32; 128 outside
    x = pattern(28, 28, 1)[..., 0]
    x[x == 128] = 127  # so that the 128s are the fill
    rows, cols = grid(x)
    for magnitude in (10, 3):
        s = np.float32(magnitude / 10 * 0.3)
        expected = [sample(x, rows, cols + sign * s * rows) for sign in (1, -1)]
        assert same_outcomes(outcomes("ShearX", x, magnitude), expected)
        expected = [sample(x, rows + sign * s * cols, cols) for sign in (1, -1)]
        assert same_outcomes(outcomes("ShearY", x, magnitude), expected)
    sheared = outcomes("ShearX", x)
    assert all(np.array_equal(out[0], x[0]) for out in sheared)  # the top row stays: the shear is about the corner
    assert [(out[27] == 128).sum() for out in sheared] == [8, 8]  # the bottom row moves by 27 * 0.3 = 8.1 px


def test_translate_scales_with_the_image():
    # 100 px (translate_const) at 224, exactly; output col takes input col + shift
    rgb = pattern(224, 224)
    rgb[rgb == 128] = 127  # so that the 128s are the fill
    left, right = sorted(outcomes("TranslateX", rgb), key=lambda out: out[0, 0, 0] == 128)  # by where the fill is
    assert np.array_equal(left[:, :124], rgb[:, 100:]) and (left[:, 124:] == 128).all()
    assert np.array_equal(right[:, 100:], rgb[:, :124]) and (right[:, :100] == 128).all()
    rows, cols = grid(rgb)
    expected = [sample(rgb, rows, cols + shift) for shift in (50, -50)]  # level 5
    assert same_outcomes(outcomes("TranslateX", rgb, magnitude=5), expected)
    expected = [sample(rgb, rows + shift, cols) for shift in (100, -100)]
    assert same_outcomes(outcomes("TranslateY", rgb), expected)
    # at 28x28, 100 * 28 / 224 = 12.5 px: rounding half away from zero moves content 13 px left or 12 px right
    grey = pattern(28, 28, 1)[..., 0]
    shifted = {"left": grey[:, 13:], "right": grey[:, 1:16]}
    for out in outcomes("TranslateX", grey):
        if out[0, 0] == 128:
            assert np.array_equal(out[:, 13:], shifted.pop("right")) and (out[:, :13] == 128).all()
        else:
            assert np.array_equal(out[:, :15], shifted.pop("left")) and (out[:, 15:] == 128).all()
    assert not shifted
    rows, cols = grid(grey)
    expected = [sample(grey, rows + shift, cols) for shift in (3.75, -3.75)]  # level 3: 0.3 * 12.5 px
    assert same_outcomes(outcomes("TranslateY", grey, magnitude=3), expected)
    # the reference size is a parameter: at 112, a 28-pixel image moves by 100 / 4 = 25 px
    expected = [sample(grey, rows, cols + shift) for shift in (25, -25)]
    assert same_outcomes(outcomes("TranslateX", grey, reference_size=112), expected)


def test_rotate():
    # tfa.image.rotate: output (col, row) takes input (cos col - sin row + dx, sin col + cos row + dy), about the
    # centre, in float32; 30 degrees at level 10 with a random sign, 128 outside
    for image in (pattern(29, 29, 1)[..., 0], pattern(40, 32)):
        rows, cols = grid(image)
        h1, w1 = np.float32(image.shape[0] - 1), np.float32(image.shape[1] - 1)
        for magnitude in (10, 3):
            expected = []
            for sign in (1, -1):
                angle = np.float32(sign * magnitude / 10 * 30) * np.float32(np.pi / 180)
                cos, sin = np.cos(angle), np.sin(angle)
                dx = (w1 - (cos * w1 - sin * h1)) / np.float32(2)
                dy = (h1 - (sin * w1 + cos * h1)) / np.float32(2)
                expected.append(sample(image, sin * cols + cos * rows + dy, cos * cols - sin * rows + dx))
            assert same_outcomes(outcomes("Rotate", image, magnitude), expected)
    for out in outcomes("Rotate", image := pattern(29, 29, 1)[..., 0]):
        assert out[14, 14] == image[14, 14] and out[0, 0] == out[0, -1] == out[-1, 0] == out[-1, -1] == 128


def test_cutout_fills_a_clipped_square():
    def masks(height, width, pad):
        for row in range(height):
            for col in range(width):
                mask = np.zeros((height, width), bool)
                mask[max(0, row - pad) : row + pad, max(0, col - pad) : col + pad] = True
                yield mask

    grey = pattern(28, 28, 1)[..., 0]
    grey[grey == 128] = 127  # so that the filled pixels are exactly the 128s
    candidates = list(masks(28, 28, 5))  # cutout_const 40 px at 224: 5 px at 28, a 10x10 square
    sizes = set()
    for seed in range(24):
        out = augment("Cutout", grey, seed=seed)
        filled = out == 128
        assert np.array_equal(out[~filled], grey[~filled]) and any(np.array_equal(filled, m) for m in candidates)
        sizes.add(filled.sum())
    assert 100 in sizes and min(sizes) < 100  # whole squares and squares clipped at the border
    rgb = pattern(224, 224)
    rgb[rgb == 128] = 127
    for magnitude, side in ((10, 80), (5, 40)):  # exact at 224: 40 px, and int(0.5 * 40) = 20
        for seed in range(6):
            filled = (augment("Cutout", rgb, magnitude, seed) == 128).all(-1)
            rows, cols = np.nonzero(filled.any(1))[0], np.nonzero(filled.any(0))[0]
            assert filled.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
            for span in (rows, cols):
                assert len(span) == side or (side // 2 <= len(span) < side and (span[0] == 0 or span[-1] == 223))


def test_op_selection_is_uniform_over_all_sixteen_ops():
    image = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    image[image == 128] = 127
    outputs = {name: {o.tobytes() for o in outcomes(name, image, magnitude=7, seeds=24)} for name in OFFICIAL_OPS}
    assert all(len(outputs[name]) == 2 for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"))
    owner = {}
    for name, outs in outputs.items():
        for out in outs:
            assert owner.setdefault(out, name) == name  # at level 7 no two ops give the same image

    def which(out: np.ndarray) -> str:
        cut = (out == 128).all(-1)
        return owner.get(out.tobytes()) or ("Cutout" if np.array_equal(out[~cut], image[~cut]) else "?")

    counts = dict.fromkeys(OFFICIAL_OPS, 0)
    rand_augment = RandAugment(num_ops=1, magnitude=7)
    for seed in range(1600):
        counts[which(rand_augment(image, np.random.default_rng(seed)))] += 1
    assert "?" not in counts and all(60 <= n <= 140 for n in counts.values()), counts  # 100 expected, sd 9.7
    assert sum((n - 100) ** 2 / 100 for n in counts.values()) < 40  # chi-square, 15 degrees of freedom


def test_matches_the_official_code_bit_for_bit():
    # sha256 (16 hex digits) of big_vision's autoaugment.py outputs, run with TF 2.15.1 and tensorflow-addons 0.23
    # through tf.data, for these two images at levels 10 and 3 (both signs of the signed ops, sorted by bytes)
    official = {
        "AutoContrast": "ec1f32a6266689ca", "Equalize": "d358ccca3175963e", "Invert": "b2e66f4092f5f3f3",
        "Rotate": "7408234672bdb5d1", "Posterize": "f14d02c986f57211", "Solarize": "e14626fb861b7374",
        "Color": "88b21088499a646a", "Contrast": "317da7f9910b186c", "Brightness": "4cc13a6d57890dc0",
        "Sharpness": "5268812f518361e7", "ShearX": "cf83c20c6a0f53ce", "ShearY": "10cb58f7b2b81069",
        "TranslateX": "3ce848b625672f11", "TranslateY": "59e1612f138483ce", "SolarizeAdd": "047f770af9e2e704",
    }  # fmt: skip
    for name, digest in official.items():
        sha = hashlib.sha256()
        for image in (pattern(40, 32), pattern(28, 28, 1)):
            for magnitude in (10, 3):
                for out in outcomes(name, image, magnitude):
                    sha.update(out.tobytes())
        assert sha.hexdigest()[:16] == digest, name


def test_rand_augment_draws_only_from_the_rng_it_is_given():
    for image in (noise((28, 28), "L"), noise((40, 32), "RGB")):
        rand_augment = RandAugment()
        first, second = (np.asarray(rand_augment(image, np.random.default_rng(7))) for _ in range(2))
        assert np.array_equal(first, second)
        distinct = {np.asarray(rand_augment(image, np.random.default_rng(s))).tobytes() for s in range(20)}
        assert len(distinct) >= 15
    np.random.seed(0)
    random.seed(0)
    expected = np.random.random(), random.random()
    np.random.seed(0)
    random.seed(0)
    RandAugment(num_ops=8)(noise(), np.random.default_rng(0))
    assert (np.random.random(), random.random()) == expected


def test_rand_augment_applies_num_ops_in_turn_and_validates():
    x = ALL_VALUES.astype(np.int64)
    assert np.array_equal(np.asarray(RandAugment(num_ops=2, ops=["Invert"])(ALL_VALUES, np.random.default_rng(0))), x)
    twice = np.where(x < 128, np.minimum(x + 110, 255), x)
    twice = np.where(twice < 128, np.minimum(twice + 110, 255), twice)
    assert np.array_equal(RandAugment(num_ops=2, ops=["SolarizeAdd"])(ALL_VALUES, np.random.default_rng(0)), twice)
    image = noise()
    assert np.array_equal(np.asarray(RandAugment(num_ops=0)(image, np.random.default_rng(0))), np.asarray(image))
    with pytest.raises(ValueError, match="Identity"):
        RandAugment(ops=["Rotate", "Identity"])  # torchvision's, not in the official set
    for magnitude in (11, -1):
        with pytest.raises(ValueError, match=f"magnitude={magnitude}"):
            RandAugment(magnitude=magnitude)
    with pytest.raises(ValueError, match="RGBA"):
        RandAugment()(image.convert("RGBA"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="float32"):
        RandAugment()(np.zeros((8, 8), np.float32), np.random.default_rng(0))


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
