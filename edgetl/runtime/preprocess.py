"""The one preprocessing spec: image decode rule, resize, normalisation, for training and deployment.

numpy and Pillow only: this is the line runtime's code, and training, bench and export import it from here
(``edgetl.preprocess`` re-exports it beside the torch helpers).

Decode rule (the same in training, bench and the deployed numpy code):

1. EXIF orientation is applied (``ImageOps.exif_transpose``).
2. 16-bit grey (``I;16*`` or ``I`` within 0..65535) is scaled linearly to 8 bits (``round(v / 257)``),
   never clipped; negative values, wider ranges and floating-point images are rejected. 16-bit RGB is read
   by Pillow as 8-bit RGB keeping the high byte (``v >> 8``), also a linear scale. Images with more pixels
   than Pillow's ``Image.MAX_IMAGE_PIXELS`` are refused (decompression bombs); that limit is never lifted.
3. Alpha is dropped; palette, CMYK and YCbCr images are converted to RGB by Pillow.
4. A one-channel model gets ITU-R 601 luma of colour images; a three-channel model gets grey replicated.
5. The image is resized to ``input_size`` x ``input_size`` with Pillow's bilinear filter: ``stretch`` fills the
   square (aspect not kept), ``letterbox`` scales the longer side to ``input_size`` (``round(side * scale)``) and
   centres the image on black padding (offset ``(input_size - new) // 2``; nvinfer's ``maintain-aspect-ratio=1``
   with ``symmetric-padding=1``). Then pixels are scaled to [0, 1] and normalised with ``mean`` / ``std``: on the
   host (``dtype: float32``, NCHW), or inside the model's graph, which then takes the uint8 NHWC pixels
   (``dtype: uint8``, the same arithmetic in the same order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgetl.errors import EdgetlError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (round(sum(IMAGENET_MEAN) / 3, 4),)
GRAY_STD = (round(sum(IMAGENET_STD) / 3, 4),)

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I"}

# The one list of image files edgetl reads, for an ImageFolder and a manifest alike. The decoder only opens these
# formats (a JPEG with extra pictures, MPO, opens as JPEG), whatever a file's name says, so no other Pillow
# plugin (EPS through Ghostscript, ...) ever reads a data file. Animated GIF/WebP: the first frame.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
FORMATS_READ = "PNG, JPEG, BMP, TIFF, WebP and GIF"


class ImageDecodeError(EdgetlError, ValueError):
    """An image that cannot be used, with the reason."""


class PreprocessSpec(BaseModel):
    """How a file becomes the model's input tensor; travels with the checkpoint, ONNX and bundle."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as edgetl.config.StrictModel

    input_size: int = Field(224, description="Square side in pixels.")
    channels: Literal[1, 3] = Field(3, description="Model input channels: 1 grey, 3 RGB.")
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN), description="Per channel, 0..1 scale.")
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD), description="Per channel, 0..1 scale.")
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch",
        description="stretch: whole image to the square input; letterbox: keep the aspect ratio, pad with black.",
    )
    interpolation: Literal["bilinear"] = Field("bilinear", description="Pillow resampling filter.")
    layout: Literal["NCHW", "NHWC"] = Field(
        "NCHW", description="NCHW: the normalised float tensor; NHWC: uint8 pixels as they are (dtype uint8)."
    )
    dtype: Literal["float32", "uint8"] = Field(
        "float32",
        description="float32: normalised on the host; uint8: the model takes the resized pixels and normalises "
        "them in its graph (mean / std still say how).",
    )
    exif_orientation: Literal["apply"] = "apply"
    sixteen_bit: Literal["scale_linear"] = Field("scale_linear", description="16-bit grey -> round(v / 257).")

    @model_validator(mode="after")
    def _pixels_are_nhwc(self) -> PreprocessSpec:
        if (self.dtype == "uint8") != (self.layout == "NHWC"):
            raise ValueError("uint8 input is NHWC pixels and float32 input is NCHW; set dtype and layout together")
        return self

    @property
    def takes_pixels(self) -> bool:
        """True when the model takes uint8 NHWC pixels (normalisation inside the graph)."""
        return self.dtype == "uint8"

    def as_pixels(self) -> PreprocessSpec:
        """This spec for a model that takes uint8 NHWC pixels and normalises them itself."""
        return self.model_copy(update={"dtype": "uint8", "layout": "NHWC"})

    def as_float(self) -> PreprocessSpec:
        """This spec for a model that takes the normalised float32 NCHW tensor."""
        return self.model_copy(update={"dtype": "float32", "layout": "NCHW"})

    @classmethod
    def for_channels(
        cls, channels: Literal[1, 3], *, input_size: int = 224, resize: Literal["stretch", "letterbox"] = "stretch"
    ) -> PreprocessSpec:
        """ImageNet normalisation for 3 channels, its channel average for 1 channel."""
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
        return cls(input_size=input_size, channels=channels, mean=list(mean), std=list(std), resize=resize)


def _canonical(image: Image.Image) -> Image.Image:
    """Return the image as 8-bit ``L`` or ``RGB`` following the module's decode rule."""
    mode = image.mode
    if mode in {"L", "RGB"}:
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "LA":
        return image.getchannel("L")
    if mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image)
        if array.ndim != 2:
            raise ImageDecodeError(f"unexpected {array.ndim}-D array for mode {mode}")
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ImageDecodeError(f"mode {mode} holds values outside 0..65535; convert it to 8 or 16 bit")
        scaled = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    if mode == "F":
        raise ImageDecodeError("floating-point images are not supported; save them as 8 or 16-bit PNG/TIFF")
    if mode in {"RGBA", "RGBX"}:
        return image.convert("RGB")
    if mode in {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}:
        return image.convert("RGBA" if mode in {"P", "PA"} else "RGB").convert("RGB")
    raise ImageDecodeError(f"unsupported image mode {mode}; save it as 8-bit grey or RGB")


def _refuse_bomb(image: Image.Image) -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; edgetl refuses the whole range.
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        raise ImageDecodeError(
            f"decompression bomb refused: {width}x{height} pixels is over Pillow's limit of {limit} "
            "(Image.MAX_IMAGE_PIXELS); downscale or crop the image"
        )


def decode_image(path: Path) -> Image.Image:
    """Open, fully decode and canonicalise an image file (8-bit L or RGB).

    Raises:
        ImageDecodeError: the file is missing, truncated, not an image, or of an unsupported kind.
    """
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as opened:
            _refuse_bomb(opened)
            oriented = ImageOps.exif_transpose(opened)
            oriented.load()
            return _canonical(oriented)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused ({exc}); downscale or crop the image") from exc
    except FileNotFoundError as exc:
        raise ImageDecodeError("file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"cannot decode: {exc}; edgetl reads {FORMATS_READ} files, convert it") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode: {exc}") from exc


def canonical_image(image: Image.Image) -> Image.Image:
    """An image already in memory (a PIL image) under the same decode rule as a file: 8-bit L or RGB.

    Raises:
        ImageDecodeError: the image is too large or of an unsupported kind.
    """
    _refuse_bomb(image)
    try:
        oriented = ImageOps.exif_transpose(image)
        oriented.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode: {exc}") from exc
    return _canonical(oriented)


def image_from_array(array: np.ndarray) -> Image.Image:
    """A camera frame as a numpy array -> PIL image: uint8 (H, W) grey, (H, W, 1), (H, W, 3) RGB, (H, W, 4) RGBA,
    or uint16 (H, W) grey (scaled by the 16-bit rule).

    Raises:
        ImageDecodeError: another dtype or shape (a float tensor is already preprocessed: use ``Runner.infer``).
    """
    array = np.asarray(array)
    if array.dtype == np.uint16 and array.ndim == 2:
        return _canonical(Image.fromarray(np.ascontiguousarray(array), mode="I;16"))
    if array.dtype != np.uint8:
        raise ImageDecodeError(
            f"an image array must be uint8 (or 16-bit grey), not {array.dtype}; float tensors are already "
            "preprocessed: pass them to the runner's infer()"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), mode="L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        image = Image.fromarray(np.ascontiguousarray(array), mode="RGB" if array.shape[2] == 3 else "RGBA")
        return _canonical(image)
    raise ImageDecodeError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), not {array.shape}")


def letterbox(image: Image.Image, side: int) -> Image.Image:
    """Scale the longer side to ``side`` (bilinear) and centre the image on a black ``side`` x ``side`` canvas."""
    width, height = image.size
    scale = side / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new(image.mode, (side, side), 0)
    canvas.paste(image.resize(new, Image.Resampling.BILINEAR), ((side - new[0]) // 2, (side - new[1]) // 2))
    return canvas


def resized_uint8(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Convert to the model's channels and resize by the spec's rule: uint8 array (H, W, C)."""
    image = image.convert("L" if spec.channels == 1 else "RGB")
    if spec.resize == "letterbox":
        image = letterbox(image, spec.input_size)
    else:
        image = image.resize((spec.input_size, spec.input_size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def normalize(batch_hwc: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 (N, H, W, C) or (H, W, C) -> float32 NCHW normalised tensor."""
    if batch_hwc.ndim == 3:
        batch_hwc = batch_hwc[None]
    scaled = batch_hwc.astype(np.float32) / np.float32(255.0)
    x = (scaled - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def model_input(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resized uint8 pixels (N, H, W, C) or (H, W, C) -> what the model takes: the pixels themselves (a model that
    normalises in its graph) or the normalised float32 NCHW tensor."""
    if pixels.ndim == 3:
        pixels = pixels[None]
    if spec.takes_pixels:
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    return normalize(pixels, spec)


def pixels_of(batch_nchw: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The uint8 pixels (N, H, W, C) a normalised float32 NCHW batch was made of: :func:`normalize` inverted,
    exactly for tensors that :func:`normalize` made (their values are 256 levels per channel, far apart)."""
    x = batch_nchw.transpose(0, 2, 3, 1).astype(np.float64)
    values = x * np.asarray(spec.std, np.float64) + np.asarray(spec.mean, np.float64)
    return np.ascontiguousarray(np.clip(np.rint(values * 255.0), 0, 255), dtype=np.uint8)


def float_input(batch: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A model input under ``spec`` -> the normalised float32 NCHW tensor (for the FP32 drift embedder)."""
    return normalize(batch, spec) if batch.dtype == np.uint8 and batch.ndim == 4 else batch


def preprocess_file(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """The deploy-time path: image file -> the model's input, (1, C, H, W) float32 or (1, H, W, C) uint8."""
    return model_input(resized_uint8(decode_image(path), spec), spec)
