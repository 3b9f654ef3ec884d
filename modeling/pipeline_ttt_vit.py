"""`pipeline("image-classification")` for TTT-ViT that hands every image to the processor in its own mode.

transformers' `ImageClassificationPipeline.preprocess` opens images with `load_image`, which ends in
`.convert("RGB")`: 16-bit grey ("I;16") saturates to white and transparency is dropped (hidden colours show)
before `TTTViTImageProcessor` can convert them properly. `TTTViTImageClassificationPipeline` opens paths, URLs
and base64 strings the same way but skips that conversion, so `pipeline(...)(image)` gives exactly what
`processor(image)` + `model(...)` give.

How it is reached, and why this route:
- With ttt_hf installed, `import ttt_hf` makes this class the `impl` of the "image-classification" task. Its
  `__new__` returns a stock `ImageClassificationPipeline` whenever the image processor is not a
  `TTTViTImageProcessor`, so every other model gets the unchanged stock object. (`PIPELINE_REGISTRY.
  register_pipeline` would also tag the class with `_registered_impl`, which makes `Pipeline.save_pretrained`
  write `custom_pipelines` into a saved config; and a `custom_pipelines` entry in config.json makes `pipeline()`
  demand `trust_remote_code=True` even with ttt_hf installed.)
- As remote code (`trust_remote_code=True`, no ttt_hf), the remote `TTTViTConfig.custom_pipelines` names this
  file, which `save_pretrained` copies next to the weights (modeling_ttt_vit.py imports it); the installed
  config reports no custom pipeline, so nothing asks for `trust_remote_code` there.
"""

import base64
import os
from io import BytesIO

import numpy as np
import torch
from huggingface_hub.utils import httpx  # what transformers' load_image fetches URLs with
from PIL import Image, ImageOps
from transformers.pipelines.image_classification import ImageClassificationPipeline

from .image_processing_ttt_vit import TTTViTImageProcessor


def load_image_in_its_mode(image, timeout: float | None = None) -> Image.Image:
    """transformers' `load_image` (URL, file path, base64 string or PIL image; EXIF orientation applied) without
    its final `.convert("RGB")`."""
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            image = Image.open(BytesIO(httpx.get(image, timeout=timeout, follow_redirects=True).content))
        elif os.path.isfile(image):
            image = Image.open(image)
        else:
            try:
                data = image.split(",")[1] if image.startswith("data:image/") else image
                image = Image.open(BytesIO(base64.decodebytes(data.encode())))
            except Exception as error:
                raise ValueError(
                    "Incorrect image source. Must be a valid URL starting with `http://` or `https://`, a valid path "
                    f"to an image file, or a base64 encoded string. Got {image[:100]!r}. Failed with {error}"
                ) from error
    elif not isinstance(image, Image.Image):
        raise TypeError(
            "Incorrect format used for image. Should be an url linking to an image, a base64 string, a local path, "
            f"or a PIL image, got {type(image).__name__}."
        )
    return ImageOps.exif_transpose(image)


class TTTViTImageClassificationPipeline(ImageClassificationPipeline):
    """`ImageClassificationPipeline` whose preprocessing keeps each image's PIL mode for `TTTViTImageProcessor`;
    built with any other image processor, it returns a plain `ImageClassificationPipeline`."""

    def __new__(cls, *args, **kwargs):
        # By name: remote code loads each file into its own module, so the processor may be another copy's class.
        mro = type(kwargs.get("image_processor")).__mro__
        if not any(c.__name__ == TTTViTImageProcessor.__name__ for c in mro):
            return ImageClassificationPipeline(*args, **kwargs)
        return super().__new__(cls)

    def preprocess(self, image, timeout=None):
        if not isinstance(image, (np.ndarray, torch.Tensor)):
            image = load_image_in_its_mode(image, timeout=timeout)
        return self.image_processor(images=image, return_tensors="pt").to(self.dtype)


__all__ = ["TTTViTImageClassificationPipeline", "load_image_in_its_mode"]
