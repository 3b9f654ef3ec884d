"""The device-resident data path: a split held as one uint8 tensor on the training device, augmented in batches.

The per-image path (`transforms.TrainTransform` in `dataset.with_transform`) decodes, crops and flips every image
with PIL on every epoch, then runs the image processor; on a GPU that host work, not the model, sets the pace of a
small model on small images. Here a split is decoded once through the image processor's own geometry (its resize
and centre crop, exactly) into `[N, C, S, S]` uint8 on the device; a training batch is a gather of indices, the
recipe's random-resized crop and horizontal flip as one `grid_sample` of the whole batch, and the processor's
rescale and normalisation as a 256-entry lookup table built by the processor itself — so with augmentation off the
pixel values are bit-identical to the processor's. `Trainer` still runs the loop: the dataset yields indices, the
collator builds the batch.

Where it applies (`device_data_plan`): every image of the split fits `DEVICE_DATA_MAX_BYTES` once decoded, and the
recipe needs nothing it does not do. RandAugment keeps the per-image path (its ops reproduce the official TF code
image by image in NumPy); mixup works on either path (it mixes collated batches).

Crops are taken from the image at the model's input geometry rather than from the original; for the bundled
datasets, whose images are already the model's size, that is the same image; for larger images it only changes
the interpolation (a crop is upsampled from the stored image instead of downsampled from the original).
"""

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .modeling.image_processing_ttt_vit import convert_image_mode

DEVICE_DATA_MAX_BYTES = 4 * 2**30  # the largest decoded split kept on the device


@dataclass(frozen=True)
class DevicePlan:
    """Whether the device-resident path applies to a run, and if not, why (for the log)."""

    applies: bool
    reason: str


def device_data_plan(wanted: bool, splits: dict, image_size: int, num_channels: int, rand_augment: bool) -> DevicePlan:
    """Whether to hold `splits` ({name: Dataset}) on the device for a model of this input size and channel count."""
    if not wanted:
        return DevicePlan(False, "switched off (--device_data false)")
    if rand_augment:
        return DevicePlan(False, "RandAugment runs per image (its ops reproduce the official TF code in NumPy)")
    total = sum(len(split) for split in splits.values()) * num_channels * image_size**2
    if total > DEVICE_DATA_MAX_BYTES:
        return DevicePlan(
            False, f"the decoded splits would take {total / 2**30:.1f} GiB, over {DEVICE_DATA_MAX_BYTES // 2**30} GiB"
        )
    return DevicePlan(True, f"{total / 2**20:.1f} MiB of uint8 images on the training device")


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


def decode_split(split, image_processor, chunk: int = 2048, desc: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, C, S, S], labels int64 [N]) of a split with columns `image` and `label`: each image in the
    processor's colour mode through its resize and centre crop (no rescale or normalisation)."""
    mode = "L" if getattr(image_processor, "num_channels", 3) == 1 else "RGB"
    images, labels = [], np.asarray(split["label"], dtype=np.int64)
    with tqdm(total=len(split), desc=desc or "decoding images", unit="img", disable=len(split) < 3 * chunk) as bar:
        for start in range(0, len(split), chunk):
            rows = split[start : start + chunk]["image"]
            pixels = image_processor(
                [convert_image_mode(image, mode) for image in rows],
                do_rescale=False,
                do_normalize=False,
                return_tensors="np",
            )["pixel_values"]  # [n, C, S, S], whole numbers in a float array
            images.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
            bar.update(len(rows))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(labels)


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


def crop_and_flip(
    images: torch.Tensor, boxes: torch.Tensor | None, flip: torch.Tensor | None, size: int
) -> torch.Tensor:
    """uint8 images [B, C, H, W] -> the boxes (left, top, w, h) resized to size x size with bilinear sampling (PIL's
    for upsampling), mirrored where `flip`, rounded to whole grey levels: long [B, C, size, size]."""
    batch, _, height, width = images.shape
    if boxes is None and (height, width) == (size, size):
        out = images.long()
        return torch.where(flip[:, None, None, None], out.flip(-1), out) if flip is not None else out
    if boxes is None:
        boxes = torch.tensor([[0, 0, width, height]], dtype=torch.float64, device=images.device).expand(batch, 4)
    left, top, w, h = boxes.to(torch.float64).unbind(1)
    sign = 1.0 - 2.0 * flip.double() if flip is not None else torch.ones_like(w)
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = sign * w / width, (2 * left + w) / width - 1  # output x in [-1, 1] -> input x
    theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * top + h) / height - 1
    grid = F.affine_grid(theta.float(), [batch, images.shape[1], size, size], align_corners=False)
    sampled = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.round_().clamp_(0, 255).long()  # [B, C, size, size]


class DeviceBatchCollator:
    """`Trainer`'s data collator for an `IndexDataset`: gathers the examples from the device-resident images, applies
    the recipe's random-resized crop and flip (training) or nothing (evaluation), and the processor's normalisation.

    The draws of a batch are a pure function of (seed, epoch, the batch's indices), like the per-image path's
    (seed, epoch, image content): the same on any process count or worker order, and a resumed run draws as an
    uninterrupted one. `mixup` (a `transforms.MixupCollator`) mixes the collated batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        table: torch.Tensor,
        size: int,
        *,
        random_resized_crop: bool = False,
        scale: tuple[float, float] = (0.05, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: bool = False,
        seed: int = 0,
        mixup=None,
    ):
        self.images, self.labels, self.table, self.size = (
            images,
            labels.to(images.device),
            table.to(images.device),
            size,
        )
        self.random_resized_crop, self.scale, self.ratio, self.horizontal_flip = (
            random_resized_crop,
            scale,
            ratio,
            horizontal_flip,
        )
        self.seed, self.epoch, self.mixup = seed, 0, mixup

    @property
    def augments(self) -> bool:
        return self.random_resized_crop or self.horizontal_flip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.mixup is not None:
            self.mixup.set_epoch(epoch)

    def _generator(self, indices: torch.Tensor) -> torch.Generator:
        digest = hashlib.blake2b(indices.cpu().numpy().astype(np.int64).tobytes(), digest_size=8).digest()
        key = hashlib.blake2b(f"{self.seed},{self.epoch},".encode() + digest, digest_size=8).digest()
        return torch.Generator(device=self.images.device).manual_seed(int.from_bytes(key, "little") >> 1)

    def draws(self, indices: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(crop boxes [B, 4] or None, flips bool [B] or None) of a batch."""
        if not self.augments:
            return None, None
        generator = self._generator(indices)
        uniforms = torch.rand(
            len(indices), 23, generator=generator, device=self.images.device
        )  # 10 tries x (area, ratio), x, y, flip
        _, _, height, width = self.images.shape
        boxes = (
            crop_boxes(height, width, self.scale, self.ratio, uniforms[:, :22]) if self.random_resized_crop else None
        )
        flip = uniforms[:, 22] < 0.5 if self.horizontal_flip else None
        return boxes, flip

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        indices = torch.tensor([int(f["index"]) for f in features], device=self.images.device)
        boxes, flip = self.draws(indices)
        levels = crop_and_flip(self.images[indices], boxes, flip, self.size)  # long [B, C, S, S]
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
    "decode_split",
    "device_data_plan",
    "normalisation_table",
]
