"""One image file as a uint8 array: every mode Pillow reads, grey or colour, fitted to a size.

    pixels = read_image(Path("cat/001.png"))                  # H x W (grey) or H x W x 3 (colour)
    pixels = read_image(path, size=(64, 64), resize="pad")    # fitted to 64x64 without distortion
    pixels = read_image(path, grey=True)                      # always H x W

Why a module of its own: Pillow's convert("L") clips 16-bit grey to white, reads float images
(TIFF mode F, 0..1) as black and drops the alpha channel, in which drawings made on a
transparent canvas keep their strokes. Here every mode is brought to 0..255 by its real range:
- 1, L, P, RGB, CMYK, YCbCr...: as Pillow converts them to L or RGB;
- I;16 (16-bit): divided by 257, so 0..65535 becomes 0..255 (rounded);
- I (32-bit integers): as 16-bit when the values lie in 0..65535, else stretched from its
  smallest to its largest value;
- F (floats): times 255 when the values lie in 0..1, as they are in 0..255, else stretched;
- an alpha channel (LA, PA, RGBA, La, RGBa, P with transparency) that is not fully opaque:
  when the visible pixels all have one colour, the picture is in the alpha channel (strokes
  drawn on a transparent canvas) and the alpha channel becomes the grey image (strokes bright
  on black, as in MNIST); otherwise the image is composited over black (transparent = black).
An image whose three channels are equal everywhere is grey (H x W): a folder of digits saved as
RGB stays grey. Multi-frame files give their first frame.

Sizes (height, width) are resized with Lanczos by one of RESIZE_MODES:
- stretch (the default): to exactly HxW, the aspect ratio is not kept;
- pad: scaled to fit inside HxW, aspect kept, centred on black;
- crop: scaled to cover HxW, aspect kept, the centre cut out.
An image already HxW is never touched, whatever the mode.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from . import cache
from .errors import DatasetError

RESIZE_MODES = ("stretch", "pad", "crop")
DEFAULT_RESIZE = "stretch"
ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}


@contextlib.contextmanager
def pillow_warnings_off():
    """Hide Pillow's warnings (DecompressionBombWarning, palette transparency...): the images are
    read as they are, and --quiet means quiet. Not thread-safe: enter it around, not inside, threads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_image(
    path: Path, size: tuple[int, int] | None = None, resize: str = DEFAULT_RESIZE, grey: bool = False
) -> np.ndarray:
    """path as uint8 H x W (grey) or H x W x 3 (colour; never with grey=True), fitted to size.

    Every failure is a DatasetError naming the file. Call it inside `pillow_warnings_off`.
    """
    return decode_image(path, size, resize, grey)[0]


def decode_image(
    path: Path, size: tuple[int, int] | None = None, resize: str = DEFAULT_RESIZE, grey: bool = False
) -> tuple[np.ndarray, bool]:
    """read_image, and whether the file had colour (three channels not all equal)."""
    from PIL import Image, UnidentifiedImageError

    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    try:
        with cache.open_regular(path) as file, Image.open(file) as image:
            picture = _as_8bit(image)
            had_colour = picture.mode == "RGB" and not _channels_equal(np.asarray(picture))
            if picture.mode == "RGB" and (grey or not had_colour):  # equal channels convert exactly
                picture = picture.convert("L")
            if size is not None and picture.size != (size[1], size[0]):
                picture = _fitted(picture, size, resize)
            pixels = np.array(picture, dtype=np.uint8)
    except UnidentifiedImageError as error:
        raise DatasetError(f"{path} is not an image that Pillow can read") from error
    except Image.DecompressionBombError as error:
        raise DatasetError(
            f"{path} has more pixels than Pillow's decompression-bomb limit "
            f"({2 * (Image.MAX_IMAGE_PIXELS or 0):,}): use a smaller image"
        ) from error
    except cache.NotRegularFile as error:
        raise DatasetError(f"{error}: put the image file itself there") from error
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    except (ValueError, SyntaxError) as error:  # some damaged files make Pillow's plugins raise these
        raise DatasetError(f"{path} is damaged: {error}") from error
    return pixels, had_colour


def _as_8bit(image):
    """The image in mode L or RGB, 0..255 by its real range (see the module docstring)."""
    from PIL import Image

    mode = image.mode
    if mode == "L":
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(_rounded(values / 257.0))
    if mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(_rounded(_to_0_255(values, mode)))
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        return _without_alpha(image.convert("RGBA")) if has_alpha else image.convert("RGB")
    if mode in ALPHA_MODES:
        return _without_alpha(image.convert("LA" if mode in ("LA", "La") else "RGBA"))
    return image.convert("RGB")  # RGB itself, CMYK, YCbCr, LAB, HSV, RGBX...


def _to_0_255(values: np.ndarray, mode: str) -> np.ndarray:
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    if low >= 0 and mode == "F" and high <= 1:
        return values * 255
    if low >= 0 and high <= (255 if mode == "F" else 65535):
        return values if mode == "F" else values / 257
    return (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _without_alpha(image):
    """LA or RGBA as L or RGB: the alpha channel is the picture when the visible pixels have one
    colour, else the image is composited over black; a fully opaque alpha is dropped."""
    from PIL import Image

    pixels = np.asarray(image)
    colour, alpha = pixels[..., :-1], pixels[..., -1]
    mode = "L" if image.mode == "LA" else "RGB"
    if alpha.min() == 255:
        return Image.fromarray(colour[..., 0] if mode == "L" else colour, mode)
    visible = colour[alpha > 0]
    if not len(visible) or np.all(visible == visible[0]):
        return Image.fromarray(np.ascontiguousarray(alpha), "L")
    over_black = _rounded(colour.astype(np.float64) * (alpha[..., None] / 255.0))
    return Image.fromarray(over_black[..., 0] if mode == "L" else over_black, mode)


def _fitted(picture, size: tuple[int, int], resize: str):
    from PIL import Image, ImageOps

    height, width = size
    if resize == "stretch":
        return picture.resize((width, height), Image.Resampling.LANCZOS)
    if resize == "crop":
        return ImageOps.fit(picture, (width, height), Image.Resampling.LANCZOS)
    black = 0 if picture.mode == "L" else (0, 0, 0)
    return ImageOps.pad(picture, (width, height), Image.Resampling.LANCZOS, color=black)


def _channels_equal(pixels: np.ndarray) -> bool:
    return bool(
        np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    )


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """... x 3 uint8 colour as ... grey, by the formula of Pillow's convert("L") (ITU-R 601-2
    luma, in its fixed-point form), so that --grey on arrays gives what it gives on files."""
    rgb = pixels.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
