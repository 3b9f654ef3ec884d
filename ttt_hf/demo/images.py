"""What a visitor hands the demo, made into an image or refused with a message that says what is wrong and what to
do: uploaded files (checked before anything decodes them), drawings, and the sample images that ship with the app."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_UPLOAD_BYTES = 20 * 2**20
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # what an upload may be
MAX_PIXELS = 40_000_000  # far above any photo a phone takes (PIL itself refuses beyond ~179 M as a bomb)
SAMPLES = Path(__file__).parent / "samples"  # ship with the app: <dataset>__<class name>.png
# first bytes of files that are not images but get renamed as one
_NOT_IMAGES = {b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive (or an Office document)",
               b"<!DO": "an HTML page", b"<htm": "an HTML page", b"{": "a JSON or text file"}  # fmt: skip


class UploadError(ValueError):
    """An input the demo cannot use; its message is shown in the page as it stands."""


def read_upload(path) -> Image.Image:
    """The uploaded file at `path` as a PIL image in its own mode (the pipeline converts modes properly; an
    animation gives its first frame). Raises `UploadError` for no file, an empty or oversized file, a file that is
    no image, or one with too many pixels."""
    if path is None:
        raise UploadError("No image yet: upload, paste or draw one, or pick a sample below.")
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"{path.name} is empty (0 bytes): upload the image file itself.")
    if size > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"{path.name} is {size / 2**20:.0f} MiB; the demo takes files up to {MAX_UPLOAD_BYTES // 2**20} MiB. "
            "Save a smaller copy (these models see 28×28 pixels at most)."
        )
    with path.open("rb") as file:
        head = file.read(8)
    try:
        image = Image.open(path, formats=FORMATS)  # no other decoder (EPS would hand the file to Ghostscript)
        if image.width * image.height > MAX_PIXELS:
            raise UploadError(
                f"{path.name} is {image.width}×{image.height} pixels, more than the demo takes "
                f"({MAX_PIXELS // 10**6} megapixels): save a smaller copy."
            )
        image.load()
    except UnidentifiedImageError:
        kind = next((what for magic, what in _NOT_IMAGES.items() if head.startswith(magic)), None)
        raise UploadError(
            f"{path.name} is not an image" + (f": it is {kind}" if kind else " PIL can read")
            + f". Upload a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image."
        ) from None  # fmt: skip
    except Image.DecompressionBombError:
        raise UploadError(
            f"{path.name} declares more pixels than any image the demo takes: save a smaller copy."
        ) from None
    except OSError as error:  # truncated or damaged data
        raise UploadError(f"{path.name} could not be decoded ({error}): the file is damaged or cut short.") from None
    return image


def sketch_to_image(value, margin: float = 0.2) -> Image.Image:
    """A drawing from the sketchpad (a dict with the composite RGBA array, dark strokes on a light or transparent
    canvas) as what the models were trained on: light strokes on black ("L"), cropped to the strokes and centred in
    a square with `margin` of its side free around them, as MNIST digits are."""
    composite = value.get("composite") if isinstance(value, dict) else value
    if composite is None:
        raise UploadError("Nothing drawn yet: pick the brush and draw in the box.")
    rgba = np.asarray(Image.fromarray(np.asarray(composite, dtype=np.uint8)).convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255
    grey = rgba[..., :3].mean(-1) * alpha + 255 * (1 - alpha)  # over a white canvas
    ink = 255 - grey  # [H, W]: strokes bright
    rows, cols = np.nonzero(ink > 32)
    if rows.size == 0:
        raise UploadError("Nothing drawn yet: pick the brush and draw in the box.")
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    side = int(max(ink.shape) / (1 - 2 * margin))
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8), mode="L")


def sample_images(dataset: str | None = None) -> list[Path]:
    """The sample images that ship with the app (of one dataset, or all), sorted."""
    return sorted(p for p in SAMPLES.glob("*.png") if dataset is None or p.name.split("__")[0] == dataset)


def sample_dataset(path) -> str | None:
    """The dataset a shipped sample (or a copy of one, by its file name) comes from; None for any other file."""
    from ..common.data import DATASETS

    dataset = Path(path).name.split("__")[0]
    return dataset if "__" in Path(path).name and dataset in DATASETS else None


def write_samples(directory=SAMPLES, datasets=("mnist-5k", "fashion-mnist", "digits"), per_dataset: int = 4):
    """Write the shipped samples: of each dataset's test split (ttt-hf's split), the first image of each of the
    first `per_dataset` classes seen, as <dataset>__<class name>.png ('/' and ' ' become '-' and '_'). Run as
    `python -m ttt_hf.demo.images`."""
    from ..common.data import load_image_arrays
    from .in_context import class_names

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in datasets:
        images, labels = load_image_arrays(dataset, "test")
        names = class_names(dataset)
        firsts = {}
        for index, label in enumerate(labels.tolist()):
            firsts.setdefault(label, index)
            if len(firsts) == per_dataset:
                break
        for label, index in firsts.items():
            target = directory / f"{dataset}__{names[label].replace('/', '-').replace(' ', '_')}.png"
            Image.fromarray(images[index]).save(target)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in write_samples():
        print(path)
