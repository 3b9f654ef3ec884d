"""Training and evaluation transforms for image classification in PIL/NumPy/torch (no torchvision).

The paper's recipe (MTTT.md): random-resized crop (5-100 % of the area, aspect ratio 3/4-4/3), horizontal
flip, RandAugment(2, 10) and mixup 0.2 for training; resize and centre crop for evaluation. Geometry and
augmentation act on PIL images at the model's input size; scaling to [-1, 1] always goes through the
model's image processor, so training and inference see the same normalisation.

`TrainTransform` and `EvalTransform` map a batch {"image": [PIL], "label": [int]} to {"pixel_values",
"labels"} for `dataset.with_transform`; `collate_images` and `MixupCollator` are `Trainer` data collators.
"""

import hashlib

import numpy as np
import torch
from PIL import Image, ImageOps

from ..modeling.image_processing_ttt_vit import convert_image_mode
from .randaugment import RandAugment


def augmentation_rng(seed: int, epoch: int, content: bytes) -> np.random.Generator:
    """The random draws for one image (or one mixup batch): a pure function of (seed, epoch, content).

    Keying randomness on what is augmented, not on a generator's running state, makes augmentation the same
    whichever DataLoader worker, process or prefetch order handles the image, and a run resumed from a
    checkpoint augments exactly as an uninterrupted one. A new epoch (`set_epoch`) gives new draws.
    """
    digest = int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "little")
    return np.random.default_rng([seed, epoch, digest])


class _EpochSeeded:
    """`seed` and `epoch` of a randomised transform; Trainer callbacks call `set_epoch` as samplers do."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


def random_resized_crop(
    image: Image.Image,
    size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> Image.Image:
    """Crop a random area (share `scale` of the image, aspect ratio `ratio`) and resize it to `size` (height,
    width), as torchvision's RandomResizedCrop: ten tries, then a centre crop at the nearest allowed ratio."""
    left, top, w, h = crop_box(image.size[1], image.size[0], scale, ratio, rng)
    return image.resize((size[1], size[0]), resample, box=(left, top, left + w, top + h))


def crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random-resized crop of a height x width image (`random_resized_crop`'s draw)."""
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w, h = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1))
            break
    else:
        w = min(width, round(height * ratio[1]))
        h = min(height, round(width / ratio[0]))
        left, top = (width - w) // 2, (height - h) // 2
    return left, top, w, h


def _input_size(image_processor) -> tuple[int, int]:
    """(height, width) of the model input: the processor's crop size, or its fixed size when it does not crop."""
    size = image_processor.crop_size if getattr(image_processor, "do_center_crop", False) else image_processor.size
    if size is None or size.get("height") is None or size.get("width") is None:
        raise ValueError(f"Cannot tell the model's input size from the image processor (size {size}).")
    return size["height"], size["width"]


def _outputs(pixel_values: torch.Tensor, batch: dict[str, list]) -> dict[str, list]:
    outputs = {"pixel_values": list(pixel_values)}  # [C, H, W] per example
    if "label" in batch:
        outputs["labels"] = list(batch["label"])
    return outputs


class TrainTransform(_EpochSeeded):
    """The paper's training augmentation of a batch {"image": [PIL], "label": [int]}, for `dataset.with_transform`.

    Random-resized crop to the processor's input size (off: the processor's resize and centre crop instead),
    horizontal flip, then RandAugment; the image processor then only rescales and normalises. The paper's pixel
    models use the crop alone: `TrainTransform(processor, horizontal_flip=False, rand_augment=False)`.
    """

    def __init__(
        self,
        image_processor,
        *,
        random_resized_crop: bool = True,
        scale: tuple[float, float] = (0.05, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: bool = True,
        rand_augment: bool | RandAugment = True,
        seed: int = 0,
    ):
        self.seed = seed
        self.image_processor = image_processor
        self.size = _input_size(image_processor)
        self.mode = "L" if getattr(image_processor, "num_channels", 3) == 1 else "RGB"
        self.resample = Image.Resampling(int(getattr(image_processor, "resample", Image.Resampling.BILINEAR)))
        self.random_resized_crop, self.scale, self.ratio = random_resized_crop, scale, ratio
        self.horizontal_flip = horizontal_flip
        self.rand_augment = RandAugment() if rand_augment is True else rand_augment or None

    def augment(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """One image through crop, flip and RandAugment (each if switched on), in the processor's colour mode."""
        image = convert_image_mode(image, self.mode)
        if self.random_resized_crop:
            image = random_resized_crop(image, self.size, self.scale, self.ratio, rng, self.resample)
        if self.horizontal_flip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
        if self.rand_augment is not None:
            image = self.rand_augment(image, rng)
        return image

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = [
            self.augment(image, augmentation_rng(self.seed, self.epoch, _content(image))) for image in batch["image"]
        ]
        geometry = not self.random_resized_crop  # without the crop, the processor brings images to size
        inputs = self.image_processor(images, do_resize=geometry, do_center_crop=geometry, return_tensors="pt")
        return _outputs(inputs["pixel_values"], batch)


class EvalTransform:
    """Evaluation preprocessing of a batch: exactly the image processor (resize, centre crop, normalise)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return _outputs(self.image_processor(batch["image"], return_tensors="pt")["pixel_values"], batch)


def collate_images(features: list[dict]) -> dict[str, torch.Tensor]:
    """Stack `pixel_values` into [B, C, H, W] and `labels` (when present) into long [B]: the collator without
    mixup, and the one to evaluate with."""
    batch = {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])}
    if "labels" in features[0]:
        batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
    return batch


def _content(image: Image.Image) -> bytes:
    return f"{image.mode}{image.size}".encode() + image.tobytes()


class MixupCollator(_EpochSeeded):
    """Mixup (Zhang et al. 2018) as in big_vision, the paper's code: one lam ~ Beta(alpha, alpha) per batch, folded
    to lam >= 0.5, each example mixed with the previous one in the batch; `labels` become float [B, num_labels]
    mixtures of one-hot vectors that sum to 1.

    The model must compute soft-target cross-entropy, -(labels * log_softmax(logits)).sum(-1).mean(), for such
    labels: transformers' `ForSequenceClassificationLoss` would read float labels as multi-label BCE (and fix
    `config.problem_type` to it); `TTTViTForImageClassification` does. Plain `Trainer` collates evaluation batches
    with the training collator: evaluate with `collate_images` (ttt_hf.vision.trainer's trainer does).
    """

    def __init__(self, num_labels: int, alpha: float = 0.2, seed: int = 0):
        if alpha <= 0 or num_labels < 2:
            raise ValueError(f"Mixup needs alpha > 0 and num_labels >= 2, got alpha={alpha}, num_labels={num_labels}.")
        self.num_labels, self.alpha, self.seed = num_labels, alpha, seed

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return self.mix(collate_images(features))

    def mix(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mix a collated batch {"pixel_values" [B, C, H, W], "labels" long [B]} (on any device)."""
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        content = pixel_values[..., ::4, ::4].cpu().contiguous().numpy().tobytes() + labels.cpu().numpy().tobytes()
        lam = float(augmentation_rng(self.seed, self.epoch, content).beta(self.alpha, self.alpha))
        lam = max(lam, 1 - lam)
        one_hot = torch.nn.functional.one_hot(labels, self.num_labels).float()  # [B, num_labels]
        batch["pixel_values"] = lam * pixel_values + (1 - lam) * pixel_values.roll(1, dims=0)
        batch["labels"] = lam * one_hot + (1 - lam) * one_hot.roll(1, dims=0)
        return batch


__all__ = [
    "EvalTransform",
    "MixupCollator",
    "TrainTransform",
    "collate_images",
    "crop_box",
    "random_resized_crop",
]
