"""RandAugment(2, 10) as the paper's code runs it (big_vision's pp/autoaugment.py), in NumPy on uint8 arrays."""

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

# RandAugment as the paper's code runs it: big_vision's pp/autoaugment.py (a fork of TF's EfficientNet autoaugment.py),
# `distort_image_with_randaugment`, re-implemented in NumPy on uint8 arrays [H, W, C]. The TF code assumes RGB; a grey
# ("L") image goes through the same per-channel math on its one channel, which is what the TF code computes for an RGB
# image with three equal channels (each op maps such an image to one with equal channels; Color is then the identity).
# Float steps are done in float32, in TF's order, so that truncating casts land where TF's do.

_MAX_LEVEL = 10.0  # big_vision's _MAX_LEVEL: magnitude 10 is every op's full strength


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C++ std::round, which TF's nearest-neighbour sampling uses (NumPy's round goes to even)."""
    values = values.astype(np.float64)  # exact for the float32 coordinates
    return np.where(values >= 0, np.floor(values + 0.5), np.ceil(values - 0.5))


def _transform(x: np.ndarray, matrix: Sequence[float], fill: int) -> np.ndarray:
    """tfa.image.transform of wrap(x), then unwrap(fill): output pixel (col, row) takes input pixel (a col + b row + c,
    d col + e row + f), (a, ..., f) = matrix, computed in float32 and rounded as TF's kernel does; pixels whose source
    is outside the image become `fill`."""
    a, b, c, d, e, f = (np.float32(v) for v in matrix)
    height, width = x.shape[:2]
    rows, cols = np.indices((height, width), dtype=np.float32)
    src_col = _round_half_away(a * cols + b * rows + c)
    src_row = _round_half_away(d * cols + e * rows + f)
    inside = (src_row >= 0) & (src_row < height) & (src_col >= 0) & (src_col < width)
    out = np.full_like(x, fill)
    out[inside] = x[src_row[inside].astype(np.intp), src_col[inside].astype(np.intp)]
    return out


def _rotate(x: np.ndarray, degrees: float, fill: int) -> np.ndarray:
    """tfa.image.rotate by `degrees` (counter-clockwise as displayed) about the image centre, its matrix in float32."""
    radians = np.float32(degrees) * np.float32(math.pi / 180.0)
    cos, sin = np.cos(radians), np.sin(radians)
    h1, w1 = np.float32(x.shape[0] - 1), np.float32(x.shape[1] - 1)
    x_offset = (w1 - (cos * w1 - sin * h1)) / np.float32(2)
    y_offset = (h1 - (sin * w1 + cos * h1)) / np.float32(2)
    return _transform(x, (cos, -sin, x_offset, sin, cos, y_offset), fill)


def _blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    """big_vision's blend: image1 + factor (image2 - image1) in float32, clipped to [0, 255] when extrapolating, and
    truncated (not rounded) to uint8."""
    if factor == 0.0:
        return image1
    if factor == 1.0:
        return image2
    image1 = image1.astype(np.float32)
    blended = image1 + np.float32(factor) * (image2.astype(np.float32) - image1)
    return (blended if 0.0 < factor < 1.0 else np.clip(blended, 0.0, 255.0)).astype(np.uint8)


def _grey(x: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale ([H, W, 3] -> [H, W, 1]): uint8 -> float32 / 255, weights (0.2989, 0.5870, 0.1140),
    * 255.5, truncated. A grey image counts as RGB with three equal channels, whose grey is itself."""
    rgb = np.broadcast_to(x, x.shape[:2] + (3,)).astype(np.float32) * np.float32(1.0 / 255)
    weights = np.array([0.2989, 0.5870, 0.1140], np.float32)
    grey = rgb[..., 0] * weights[0] + rgb[..., 1] * weights[1] + rgb[..., 2] * weights[2]
    return (grey * np.float32(255.5)).astype(np.uint8)[..., None]


def _color(x: np.ndarray, factor: float) -> np.ndarray:
    return _blend(np.broadcast_to(_grey(x), x.shape), x, factor)


def _contrast(x: np.ndarray, factor: float) -> np.ndarray:
    # Official bug, reproduced: the "mean" is the sum of the 256-bin grey histogram / 256, i.e. the pixel count / 256,
    # not the mean grey level (pp/autoaugment.py, contrast). The degenerate image is that constant: 196 at 224x224,
    # 3 at 28x28, 0 at 8x8.
    mean = np.float32(x.shape[0] * x.shape[1]) / np.float32(256.0)
    return _blend(np.full_like(x, np.clip(mean, 0.0, 255.0).astype(np.uint8)), x, factor)


def _brightness(x: np.ndarray, factor: float) -> np.ndarray:
    return _blend(np.zeros_like(x), x, factor)


def _sharpness(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with PIL's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, truncated), the border kept."""
    height, width = x.shape[:2]
    kernel = (np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13.0)).astype(np.float64)
    image = x.astype(np.float64)
    smooth = np.zeros((max(height - 2, 0), max(width - 2, 0), x.shape[2]), np.float32)
    for i in range(3):  # TF's CPU depthwise conv: fused multiply-adds in float32, window in row-major order (the
        for j in range(3):  # float64 sum is exact here, so rounding it to float32 is exactly one FMA)
            smooth = (smooth + kernel[i, j] * image[i : i + height - 2, j : j + width - 2]).astype(np.float32)
    degenerate = x.copy()
    degenerate[1:-1, 1:-1] = np.clip(smooth, 0.0, 255.0).astype(np.uint8)
    return _blend(degenerate, x, factor)


def _autocontrast(x: np.ndarray) -> np.ndarray:
    """Per channel: stretch [min, max] to [0, 255] (float32, truncated); a flat channel stays."""
    out = x.copy()
    for k in range(x.shape[2]):
        channel = x[..., k]
        lo, hi = np.float32(channel.min()), np.float32(channel.max())
        if hi > lo:
            scale = np.float32(255.0) / (hi - lo)
            offset = -lo * scale
            out[..., k] = np.clip(channel.astype(np.float32) * scale + offset, 0.0, 255.0).astype(np.uint8)
    return out


def _equalize(x: np.ndarray) -> np.ndarray:
    """Per channel, PIL's equalize in TF's integer formula: step = (pixels - count of the top grey level) // 255,
    lut[v] = (cumulative count below v + step // 2) // step; step 0 leaves the channel."""
    out = x.copy()
    for k in range(x.shape[2]):
        channel = x[..., k]
        histogram = np.bincount(channel.ravel(), minlength=256)
        nonzero = histogram[histogram != 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step:
            lut = np.concatenate([[0], ((np.cumsum(histogram) + step // 2) // step)[:-1]])
            out[..., k] = np.clip(lut, 0, 255).astype(np.uint8)[channel]
    return out


def _posterize(x: np.ndarray, bits: int) -> np.ndarray:
    # TF's bitwise shifts clamp the shift to [0, 7] for uint8: 0 bits (levels 0-2) keeps the top bit, as 1 bit does.
    shift = np.uint8(min(max(8 - bits, 0), 7))
    return (x >> shift) << shift


def _solarize(x: np.ndarray, threshold: int) -> np.ndarray:
    # Official behaviour, reproduced: TF converts the Python int threshold to the image's uint8 (through NumPy < 2), so
    # level 10's int(1.0 * 256) = 256 wraps to 0 and *every* pixel is inverted, rather than none (pp/autoaugment.py,
    # solarize and level_to_arg's 'Solarize'; checked with TF 2.15 and NumPy 1.26).
    return np.where(x < threshold % 256, x, 255 - x).astype(np.uint8)


def _solarize_add(x: np.ndarray, addition: int, threshold: int = 128) -> np.ndarray:
    added = np.clip(x.astype(np.int64) + addition, 0, 255).astype(np.uint8)
    return np.where(x < threshold, added, x)


def _cutout(x: np.ndarray, pad_size: int, rng: np.random.Generator, fill: int) -> np.ndarray:
    """Fill the (2 pad_size)-square centred on a uniformly drawn pixel (row first), clipped at the border."""
    height, width = x.shape[:2]
    row, col = int(rng.integers(height)), int(rng.integers(width))
    out = x.copy()
    out[max(0, row - pad_size) : row + pad_size, max(0, col - pad_size) : col + pad_size] = fill
    return out


def _signed(value: float, rng: np.random.Generator) -> float:
    """big_vision's _randomly_negate_tensor: the value or its negative, with equal chance."""
    return value if rng.random() >= 0.5 else -value


def _enhance_factor(level: float) -> float:
    return (level / _MAX_LEVEL) * 1.8 + 0.1


def _shear_level(level: float) -> float:
    """The shear factor: output pixel (col, row) takes input (col + factor row, row) for ShearX; not centred."""
    return (level / _MAX_LEVEL) * 0.3


def _translate_arg(level: float, rng: np.random.Generator, ra: "RandAugment", x: np.ndarray, axis: int) -> float:
    """The signed shift in pixels along `axis` (1: x, 0: y); output pixel p takes input p + shift."""
    return _signed((level / _MAX_LEVEL) * ra.scaled(ra.translate_const, x.shape[axis]), rng)


# name -> (array [H, W, C], level, rng, the RandAugment) -> array: big_vision's NAME_TO_FUNC with level_to_arg's
# argument, in the order of its RandAugment's available_ops.
_Op = Callable[[np.ndarray, float, np.random.Generator, "RandAugment"], np.ndarray]
_OPS: dict[str, _Op] = {
    "AutoContrast": lambda x, level, rng, ra: _autocontrast(x),
    "Equalize": lambda x, level, rng, ra: _equalize(x),
    "Invert": lambda x, level, rng, ra: 255 - x,
    "Rotate": lambda x, level, rng, ra: _rotate(x, _signed((level / _MAX_LEVEL) * 30.0, rng), ra.fill),
    "Posterize": lambda x, level, rng, ra: _posterize(x, int((level / _MAX_LEVEL) * 4)),
    "Solarize": lambda x, level, rng, ra: _solarize(x, int((level / _MAX_LEVEL) * 256)),
    "Color": lambda x, level, rng, ra: _color(x, _enhance_factor(level)),
    "Contrast": lambda x, level, rng, ra: _contrast(x, _enhance_factor(level)),
    "Brightness": lambda x, level, rng, ra: _brightness(x, _enhance_factor(level)),
    "Sharpness": lambda x, level, rng, ra: _sharpness(x, _enhance_factor(level)),
    "ShearX": lambda x, level, rng, ra: _transform(x, (1, _signed(_shear_level(level), rng), 0, 0, 1, 0), ra.fill),
    "ShearY": lambda x, level, rng, ra: _transform(x, (1, 0, 0, _signed(_shear_level(level), rng), 1, 0), ra.fill),
    "TranslateX": lambda x, level, rng, ra: _transform(
        x, (1, 0, _translate_arg(level, rng, ra, x, 1), 0, 1, 0), ra.fill
    ),
    "TranslateY": lambda x, level, rng, ra: _transform(
        x, (1, 0, 0, 0, 1, _translate_arg(level, rng, ra, x, 0)), ra.fill
    ),
    "Cutout": lambda x, level, rng, ra: _cutout(
        x, int((level / _MAX_LEVEL) * ra.scaled(ra.cutout_const, min(x.shape[:2]))), rng, ra.fill
    ),
    "SolarizeAdd": lambda x, level, rng, ra: _solarize_add(x, int((level / _MAX_LEVEL) * 110)),
}
RAND_AUGMENT_OPS = tuple(_OPS)


class RandAugment:
    """RandAugment (Cubuk et al. 2020) as the paper's code runs it (big_vision's `randaug(2, 10)`, TF's
    autoaugment.py): `num_ops` times, one op drawn uniformly from `ops` (the 16 official ones by default, with
    replacement) and applied at level `magnitude` (0-10, 10 = full strength); no per-op probability.

    Formulas are the official ones, quirks included (see the comments): Solarize at level 10 inverts every pixel,
    Contrast blends towards pixel count / 256, enhance factors are (level / 10) * 1.8 + 0.1 with no random sign,
    shears are not centred, blends truncate. Rotate (30 degrees at level 10), shears (0.3) and translations get a
    random sign; geometric ops take the nearest pixel and `fill` (128) uncovered ones, as Cutout fills its square.
    The official pixel constants are for 224x224 inputs: `translate_const` (100 px) and `cutout_const` (40 px) are
    exact at `reference_size` (224) and scale with the image side (the width or height for translations, the
    shorter side for Cutout): 12.5 px and 5 px at 28x28. Takes "L" or "RGB" PIL images or uint8 arrays [H, W] or
    [H, W, C]; every draw comes from the `rng` passed in, so augmentation is reproducible.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 10,
        ops: Sequence[str] = RAND_AUGMENT_OPS,
        fill: int = 128,
        translate_const: float = 100,
        cutout_const: float = 40,
        reference_size: int = 224,
    ):
        unknown = sorted(set(ops) - set(_OPS))
        if unknown:
            raise ValueError(f"Unknown RandAugment ops {unknown}; choose from {list(_OPS)}.")
        if not ops or num_ops < 0 or not 0 <= magnitude <= _MAX_LEVEL:
            raise ValueError(
                f"RandAugment needs ops, num_ops >= 0 and 0 <= magnitude <= {_MAX_LEVEL:g}; got {len(ops)} ops, "
                f"num_ops={num_ops}, magnitude={magnitude}."
            )
        self.num_ops, self.magnitude, self.ops, self.fill = num_ops, float(magnitude), tuple(ops), fill
        self.translate_const, self.cutout_const, self.reference_size = translate_const, cutout_const, reference_size

    def scaled(self, const: float, side: int) -> float:
        """A pixel constant given for `reference_size` inputs, at an image side of `side` pixels."""
        return const * side / self.reference_size

    def __call__(self, image: Image.Image | np.ndarray, rng: np.random.Generator) -> Image.Image | np.ndarray:
        if isinstance(image, Image.Image):
            if image.mode not in ("L", "RGB"):
                raise ValueError(f"RandAugment takes L or RGB images, got mode {image.mode}.")
            return Image.fromarray(self.apply(np.asarray(image), rng))
        return self.apply(image, rng)

    def apply(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The augmentation of a uint8 array [H, W] or [H, W, C], as an array of the same shape."""
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise ValueError(f"RandAugment takes uint8 arrays [H, W] or [H, W, C], got {array.dtype} {array.shape}.")
        x = array[..., None] if array.ndim == 2 else array
        for _ in range(self.num_ops):
            x = _OPS[self.ops[rng.integers(len(self.ops))]](x, self.magnitude, rng, self)
        return x.reshape(array.shape)

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude:g}, ops={list(self.ops)})"


__all__ = ["RAND_AUGMENT_OPS", "RandAugment"]
