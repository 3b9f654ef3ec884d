"""The device-resident data path: a split held as uint8 tensors on the training device, augmented in batches.

The per-image path (`transforms.TrainTransform` in `dataset.with_transform`) decodes, crops and flips every image
with PIL on every epoch, then runs the image processor; on a GPU that host work, not the model, sets the pace of a
small model on small images. Here every split is decoded once through the image processor's own geometry (its
resize and centre crop, exactly) into `[N, C, S, S]` uint8 on the device, and the processor's rescale and
normalisation become a 256-entry lookup table built by the processor itself, so that without augmentation the
pixel values are bit-identical to the processor's. For the recipe's random-resized crop the training split is also
kept at its own resolution, and a batch's crops are resized with PIL's bilinear weights written as two matrices per
image (`resize_weights`: antialiased when shrinking, as PIL's `resize(box=...)`), flips included, in two batched
matrix products. `Trainer` still runs the loop: the dataset yields indices, the collator builds the batch.

Where it applies (`device_data_plan`): the decoded splits fit `DEVICE_DATA_MAX_BYTES`, the recipe needs nothing it
does not do (RandAugment keeps the per-image path: its ops reproduce the official TF code image by image in NumPy;
mixup works on either path), and, with the random-resized crop on, the training images all have one size.
"""

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..modeling.image_processing_ttt_vit import convert_image_mode

DEVICE_DATA_MAX_BYTES = 4 * 2**30  # the largest decoded split kept on the device


@dataclass(frozen=True)
class DevicePlan:
    """Whether the device-resident path applies to a run, and if not, why (for the log)."""

    applies: bool
    reason: str


def device_data_plan(
    wanted: bool, splits: dict, image_size: int, num_channels: int, rand_augment: bool, crop: bool = False
) -> DevicePlan:
    """Whether to hold `splits` ({name: Dataset}) on the device for a model of this input size and channel count
    (with `crop`: the training split at its own resolution too, which needs one image size)."""
    if not wanted:
        return DevicePlan(False, "switched off (--device_data false)")
    if rand_augment:
        return DevicePlan(False, "RandAugment runs per image (its ops reproduce the official TF code in NumPy)")
    total = sum(len(split) for split in splits.values()) * num_channels * image_size**2
    sizes = None
    if crop:
        sizes = _image_sizes(splits["train"])
        if len(sizes) != 1:
            return DevicePlan(False, f"the training images have {len(sizes)} sizes; random-resized crops of them are "
                              "cut image by image")  # fmt: skip
        height, width = next(iter(sizes))
        total += len(splits["train"]) * num_channels * height * width
    if total > DEVICE_DATA_MAX_BYTES:
        limit = DEVICE_DATA_MAX_BYTES / 2**30
        return DevicePlan(False, f"the decoded splits would take {total / 2**30:.1f} GiB, over {limit:g} GiB")
    return DevicePlan(True, f"{total / 2**20:.1f} MiB of uint8 images on the training device")


def _image_sizes(split) -> set[tuple[int, int]]:
    """The (height, width) of the images of `split` (PIL reads only the headers)."""
    import io

    import PIL.Image
    from datasets import Image

    sizes = set()
    for item in split.cast_column("image", Image(decode=False))["image"]:
        with PIL.Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]) as image:
            sizes.add((image.height, image.width))
    return sizes


def normalisation_table(image_processor) -> torch.Tensor:
    """[C, 256] float32: the processor's rescale and normalisation of every uint8 value, computed by the processor's
    own methods, so that looking pixels up in it is exactly what the processor does."""
    channels = int(getattr(image_processor, "num_channels", 3))
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (channels, 1, 256)).copy()  # [C, 1, 256]
    table = values.astype(np.float32)
    if image_processor.do_rescale:
        table = image_processor.rescale(values, image_processor.rescale_factor)
    if image_processor.do_normalize:
        table = image_processor.normalize(table, image_processor.image_mean, image_processor.image_std)
    return torch.from_numpy(np.ascontiguousarray(table[:, 0, :], dtype=np.float32))


def _mode(image_processor) -> str:
    return "L" if getattr(image_processor, "num_channels", 3) == 1 else "RGB"


def decode_split(split, image_processor, chunk: int = 2048, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, C, S, S], labels int64 [N]) of a split with columns `image` and `label`: each image in the
    processor's colour mode through its resize and centre crop (no rescale or normalisation)."""
    images, labels = [], np.asarray(split["label"], dtype=np.int64)
    with tqdm(total=len(split), desc=desc or "decoding images", unit="img", disable=len(split) < 3 * chunk) as bar:
        for start in range(0, len(split), chunk):
            rows = split[start : start + chunk]["image"]
            pixels = image_processor(
                [convert_image_mode(image, _mode(image_processor)) for image in rows],
                do_rescale=False,
                do_normalize=False,
                return_tensors="np",
            )["pixel_values"]  # [n, C, S, S], whole numbers in a float array
            images.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
            bar.update(len(rows))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(labels)


def decode_sources(split, image_processor) -> torch.Tensor:
    """The images of a split at their own resolution, in the processor's colour mode: uint8 [N, C, H, W] (one size)."""
    arrays = [np.asarray(convert_image_mode(image, _mode(image_processor))) for image in split["image"]]
    stacked = np.stack(arrays)  # [N, H, W] or [N, H, W, C]
    return torch.from_numpy(stacked[:, None] if stacked.ndim == 3 else np.moveaxis(stacked, -1, 1).copy())


class IndexDataset(torch.utils.data.Dataset):
    """The examples of a device-resident split as their indices; the collator turns a list of them into a batch."""

    def __init__(self, size: int, offset: int = 0):
        self.size, self.offset = size, offset  # the examples are rows offset .. offset + size - 1 of the images

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} examples")
        return {"index": self.offset + index}


def crop_boxes(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    uniforms: torch.Tensor,
    tries: int = 10,
) -> torch.Tensor:
    """Random-resized-crop boxes [B, 4] (left, top, w, h) as `transforms.crop_box` draws them, for a batch at once:
    `tries` draws of area share and log aspect ratio per image, the first that fits, else the centre crop at the
    nearest allowed ratio. `uniforms` [B, 2 tries + 2] are U(0, 1) draws."""
    area_share = scale[0] + (scale[1] - scale[0]) * uniforms[:, :tries].double()
    log_ratio = (
        math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * uniforms[:, tries : 2 * tries].double()
    )
    area, aspect = height * width * area_share, torch.exp(log_ratio)
    w, h = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))  # [B, tries]
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first try that fits (0 if none)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
    w = torch.where(found, w, torch.full_like(w, min(width, round(height * ratio[1]))))
    h = torch.where(found, h, torch.full_like(h, min(height, round(width / ratio[0]))))
    left = torch.where(found, torch.floor(uniforms[:, -2].double() * (width - w + 1)), (width - w) // 2)
    top = torch.where(found, torch.floor(uniforms[:, -1].double() * (height - h + 1)), (height - h) // 2)
    return torch.stack([left, top, w, h], 1)


def resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, source: int) -> torch.Tensor:
    """[B, size, source] float32: PIL's bilinear resampling of the interval [start, start + length) of a `source`-long
    axis to `size` samples, per image (Resample.c's coefficients: a triangle of width max(scale, 1), so shrinking is
    antialiased, renormalised over the pixels inside the image)."""
    scale = (length / size).double()[:, None, None]  # [B, 1, 1]
    width = torch.clamp(scale, min=1.0)
    out = torch.arange(size, dtype=torch.float64, device=start.device)[None, :, None]  # [1, size, 1]
    pixel = torch.arange(source, dtype=torch.float64, device=start.device)[None, None, :]  # [1, 1, source]
    centre = start.double()[:, None, None] + (out + 0.5) * scale
    weights = torch.clamp(1 - torch.abs((pixel + 0.5 - centre) / width), min=0)  # [B, size, source]
    return (weights / weights.sum(-1, keepdim=True)).float()


def crop_and_flip(
    images: torch.Tensor, boxes: torch.Tensor | None, flip: torch.Tensor | None, size: int
) -> torch.Tensor:
    """uint8 images [B, C, H, W] -> the boxes (left, top, w, h; whole images if None) resized to size x size as PIL's
    bilinear `resize(box=...)` does (to within one grey level: PIL rounds between its two passes), mirrored where
    `flip`, rounded to whole grey levels: long [B, C, size, size]."""
    batch, _, height, width = images.shape
    if boxes is None and (height, width) == (size, size):
        out = images.long()
        return torch.where(flip[:, None, None, None], out.flip(-1), out) if flip is not None else out
    if boxes is None:
        boxes = torch.tensor([[0, 0, width, height]], dtype=torch.float64, device=images.device).expand(batch, 4)
    left, top, w, h = boxes.to(torch.float64).unbind(1)
    rows = resize_weights(top, h, size, height)  # [B, size, H]
    columns = resize_weights(left, w, size, width)  # [B, size, W]
    if flip is not None:
        columns = torch.where(flip[:, None, None], columns.flip(1), columns)
    out = rows[:, None] @ images.float() @ columns[:, None].transpose(-1, -2)  # [B, C, size, size]
    return out.round_().clamp_(0, 255).long()


class DeviceBatchCollator:
    """`Trainer`'s data collator for an `IndexDataset`: gathers the examples from the device-resident images, applies
    the recipe's random-resized crop and flip (training) or nothing (evaluation), and the processor's normalisation.

    `images` [N, C, S, S] are at the processor's geometry; `sources` [M, C, H, W], if given, are the first M of them
    at their own resolution, which crops are cut from (without, crops are cut from `images`). The draws of a batch are
    a pure function of (seed, epoch, the batch's indices) on one device type: whatever the order in which batches are
    built, a resumed run draws as an uninterrupted one (another batch size or process count makes other batches, and
    so other draws). `mixup` (a `transforms.MixupCollator`, given its epoch by the trainer's callback) mixes the batch.
    """

    TRIES = 10  # random-resized-crop draws per image before the centre-crop fallback, as torchvision's

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        table: torch.Tensor,
        size: int,
        *,
        sources: torch.Tensor | None = None,
        random_resized_crop: bool = False,
        scale: tuple[float, float] = (0.05, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: bool = False,
        seed: int = 0,
        mixup=None,
    ):
        device = images.device
        self.images, self.sources, self.size = images, sources, size
        self.labels, self.table = labels.to(device), table.to(device)
        self.random_resized_crop, self.scale, self.ratio = random_resized_crop, scale, ratio
        self.horizontal_flip, self.seed, self.epoch, self.mixup = horizontal_flip, seed, 0, mixup

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, indices: torch.Tensor) -> torch.Generator:
        digest = hashlib.blake2b(indices.cpu().numpy().astype(np.int64).tobytes(), digest_size=8).digest()
        key = hashlib.blake2b(f"{self.seed},{self.epoch},".encode() + digest, digest_size=8).digest()
        return torch.Generator(device=self.images.device).manual_seed(int.from_bytes(key, "little") >> 1)

    def draws(self, indices: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(crop boxes [B, 4] in a height x width image or None, flips bool [B] or None) of a batch."""
        if not (self.random_resized_crop or self.horizontal_flip):
            return None, None
        columns = 2 * self.TRIES + 3  # per try an area and a ratio; then x, y and the flip
        uniforms = torch.rand(len(indices), columns, generator=self._generator(indices), device=self.images.device)
        boxes = None
        if self.random_resized_crop:
            boxes = crop_boxes(height, width, self.scale, self.ratio, uniforms[:, :-1], tries=self.TRIES)
        return boxes, (uniforms[:, -1] < 0.5 if self.horizontal_flip else None)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        indices = torch.tensor([int(f["index"]) for f in features], device=self.images.device)
        crop_from = self.sources if self.random_resized_crop and self.sources is not None else self.images
        pictures = crop_from[indices]  # uint8 [B, C, H, W]
        boxes, flip = self.draws(indices, *pictures.shape[-2:])
        levels = crop_and_flip(pictures, boxes, flip, self.size)  # long [B, C, S, S]
        channel = torch.arange(levels.shape[1], device=levels.device)[None, :, None, None]
        batch = {"pixel_values": self.table[channel, levels], "labels": self.labels[indices]}
        return self.mixup.mix(batch) if self.mixup is not None else batch


__all__ = [
    "DEVICE_DATA_MAX_BYTES",
    "DeviceBatchCollator",
    "DevicePlan",
    "IndexDataset",
    "crop_and_flip",
    "crop_boxes",
    "decode_sources",
    "decode_split",
    "device_data_plan",
    "normalisation_table",
    "resize_weights",
]
