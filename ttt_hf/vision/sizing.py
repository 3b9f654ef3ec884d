"""Choosing a model's input geometry (image and patch size) from a dataset's images.

`--preset auto` (the trainer's default) is a small MTTT-MLP ViT sized to the data: small images (up to 64 pixels,
e.g. 28x28 Fashion-MNIST, 8x8 digits) are used at their own size, cut into the patch size (2 pixels or more) whose
token grid is closest to 4 x 4 (7 x 7 patches on 28 x 28, 2 x 2 on 8 x 8); larger images are resized to at most
224 and cut into 16 x 16 patches, as the paper's ViT/16s. A named preset keeps its patch size; if that does not
fit the data, the error names the flags that do.
"""

import math

from ..common.data import ImageInfo

# The small model behind `--preset auto` (0.3-0.5 M parameters): trains the bundled datasets in minutes on a CPU.
AUTO_MODEL = dict(
    mixer="ttt_mlp", hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=384,
    position_embedding="sincos2d",
)  # fmt: skip
SMALL_IMAGE = 64  # up to this side, images are used at their own resolution
# 16 tokens: on 2 CPU cores the auto model trains at 472 images/s with 7x7 patches of 28x28 images and at 182 with
# 4x4 patches (49 tokens; eager forward + backward, batch 64), and the bundled datasets need no finer grid.
TARGET_GRID = 4


def grid_patch_size(side: int, target_grid: float = TARGET_GRID) -> int:
    """The patch side p (a divisor of `side`, at least 2 pixels, at least a 2 x 2 grid) whose grid side / p is
    closest to `target_grid` in ratio (ties: more tokens); 1 (pixels) only if no such p exists. Pixels as tokens
    are the paper's costly setting: on 8x8 digits they train 4x slower than 2x2 patches and learn less."""
    divisors = [p for p in range(2, side // 2 + 1) if side % p == 0] or [1]
    return min(divisors, key=lambda p: (abs(math.log(side / p / target_grid)), p))


def data_side(info: ImageInfo) -> int:
    """The side the model sees: the short side of the images (the processor resizes it, then centre-crops)."""
    return min(info.height, info.width)


def auto_geometry(info: ImageInfo, image_size: int | None = None) -> dict:
    """image_size and patch_size of `--preset auto` for a dataset's images (or for `image_size`, if given)."""
    side = data_side(info)
    size = image_size or (side if side <= SMALL_IMAGE else min(224, side // 16 * 16))
    grid = TARGET_GRID if size <= SMALL_IMAGE else size / 16  # larger images: patches of about 16 pixels
    return {"image_size": size, "patch_size": grid_patch_size(size, grid)}


def preset_geometry(info: ImageInfo, preset_fields: dict, image_size: int | None) -> dict:
    """image_size for a named preset: `image_size` if given, else the data's own side for small images, else the
    preset's. Raises a ValueError naming the flags that fix a patch size that does not divide it."""
    side = data_side(info)
    size = image_size or (side if side <= SMALL_IMAGE else preset_fields["image_size"])
    patch = preset_fields["patch_size"]
    if size % patch:
        fit = grid_patch_size(size)
        multiple = max(patch, round(size / patch) * patch)
        raise ValueError(
            f"The model would see {size}x{size} images (the data's own size), which {patch}x{patch} patches do not "
            f"tile. Fix it with one of: --config_overrides patch_size={fit} (a {size // fit}x{size // fit} token "
            f"grid), --image_size {multiple} (resize the images), or --preset auto (a small model sized to the data)."
        )
    return {"image_size": size}


__all__ = ["AUTO_MODEL", "auto_geometry", "grid_patch_size", "preset_geometry"]
