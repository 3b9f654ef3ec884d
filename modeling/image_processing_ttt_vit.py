"""Image processor of TTT-ViT: PIL/NumPy only (no torchvision), pixels scaled to [-1, 1] as in the paper.

Evaluation geometry follows the paper: resize the short side to image_size * 256 / 224, centre-crop
image_size. Any PIL mode is accepted and converted to the model's channel count (alpha is composited
onto white, palettes are expanded, CMYK is converted), so grey, RGB and RGBA photos all work.
"""

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

_MODES = {1: "L", 3: "RGB"}


class TTTViTImageProcessorKwargs(ImagesKwargs, total=False):
    num_channels: int


def convert_image_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert a PIL image of any mode to `mode` ("L" or "RGB"), compositing transparency onto white."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit grey: bring to 8 bits
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and array.max() <= 1.0:
            array = array * 255.0  # floats in [0, 1]
        elif array.max() > 255:
            array = array / 257.0  # 16-bit range 0..65535
        image = Image.fromarray(np.uint8(np.clip(np.round(array), 0, 255)))
    return image if image.mode == mode else image.convert(mode)


class TTTViTImageProcessor(PilBackend):
    r"""
    Args:
        num_channels (`int`, defaults to 3): channels the model expects; PIL images are converted to "RGB" (3)
            or "L" (1), and arrays or tensors with another channel count are refused with a clear error.
        size (`dict`, defaults to `{"shortest_edge": 256}`), crop_size (defaults to 224x224), image_mean and
            image_std (0.5, giving [-1, 1]): the usual ViT processor fields.
    """

    valid_kwargs = TTTViTImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    size = {"shortest_edge": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    num_channels = 3

    def __init__(self, **kwargs):
        channels = kwargs.get("num_channels", self.num_channels)
        if channels not in _MODES:
            raise ValueError(f"`num_channels` must be 1 or 3, got {channels!r}.")
        kwargs.setdefault("image_mean", [0.5] * channels)
        kwargs.setdefault("image_std", [0.5] * channels)
        super().__init__(**kwargs)

    @classmethod
    def for_image_size(
        cls, image_size: int, num_channels: int = 3, crop_fraction: float = 224 / 256, **kwargs
    ) -> "TTTViTImageProcessor":
        """Evaluation geometry for a model trained at `image_size`: resize the short side to
        image_size / crop_fraction, centre-crop image_size (the paper's 256 -> 224; 1.0 for no crop)."""
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"`crop_fraction` must be in (0, 1], got {crop_fraction}.")
        return cls(
            size={"shortest_edge": round(image_size / crop_fraction)},
            crop_size={"height": image_size, "width": image_size},
            num_channels=num_channels,
            **kwargs,
        )

    def to_dict(self) -> dict:
        """The saved config, without `image_processor_type`: AutoImageProcessor then takes the class from the
        model's config.json (the class ttt_hf registers, or its `auto_map` entry as remote code). A type or an
        auto_map in preprocessor_config.json would also make transformers' pipeline probe for a remote *video*
        processor and ask the user whether to run custom code, even with ttt_hf installed."""
        config = super().to_dict()
        config.pop("image_processor_type", None)
        return config

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs) -> np.ndarray:
        if isinstance(image, Image.Image):
            image = np.asarray(convert_image_mode(image, _MODES[self.num_channels]))
            image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)  # [C, H, W]
            return image
        image = super().process_image(image, do_convert_rgb=False, input_data_format=input_data_format)
        if image.shape[0] != self.num_channels:
            if image.shape[0] == 1 and self.num_channels == 3:
                return np.repeat(image, 3, axis=0)
            raise ValueError(
                f"Expected images with {self.num_channels} channels (`num_channels`), got an array of shape "
                f"{tuple(image.shape)} (channels first). Pass PIL images to have them converted."
            )
        return image


__all__ = ["TTTViTImageProcessor"]
