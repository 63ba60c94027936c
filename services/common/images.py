"""Image decoding and validation with Pillow, done once at the edge of the system.

Accepts PNG, JPEG, TIFF, WebP and BMP; applies EXIF orientation; converts grayscale, palette,
alpha and 16-bit images to 8-bit RGB; enforces byte and pixel limits before decoding the pixels
(decompression bombs). Every failure is an `ImageError` with a reason a client can act on.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from handwriting.v1 import image_pb2
from services.common.settings import ImageLimits

FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")


class ImageError(ValueError):
    """An image that cannot be used; `field` names the request field, `reason` is a stable code."""

    def __init__(self, reason: str, description: str, field: str = "image"):
        super().__init__(description)
        self.reason = reason
        self.description = description
        self.field = field


def decode_image(data: bytes, limits: ImageLimits, field: str = "image.content") -> Image.Image:
    """Decode encoded image bytes into an 8-bit RGB image, or raise ImageError."""
    if not data:
        raise ImageError("EMPTY_IMAGE", "the image is empty (0 bytes)", field)
    if len(data) > limits.max_image_bytes:
        raise ImageError(
            "IMAGE_TOO_LARGE", f"the image is {len(data)} bytes; the limit is {limits.max_image_bytes}", field
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            _check_size(width, height, limits, field)
            image.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if isinstance(error, UnidentifiedImageError):
            raise ImageError(
                "UNSUPPORTED_IMAGE", f"not a PNG, JPEG, TIFF, WebP or BMP image ({len(data)} bytes)", field
            ) from error
        raise ImageError("TOO_MANY_PIXELS", str(error), field) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError("CORRUPT_IMAGE", f"the image is corrupt or truncated: {error}", field) from error
    return normalize_mode(ImageOps.exif_transpose(image))


def _check_size(width: int, height: int, limits: ImageLimits, field: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError("EMPTY_IMAGE", f"the image has no pixels ({width}x{height})", field)
    if width * height > limits.max_image_pixels or max(width, height) > limits.max_image_side:
        raise ImageError(
            "TOO_MANY_PIXELS",
            f"the image is {width}x{height} pixels; the limits are {limits.max_image_pixels} pixels "
            f"and {limits.max_image_side} per side",
            field,
        )


def normalize_mode(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is flattened onto white paper."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = array.max() if array.size else 0
        scale = 255.0 / (65535.0 if high > 255 else 255.0) if image.mode != "F" else 255.0 / max(high, 1e-9)
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def image_from_proto(message: image_pb2.Image, limits: ImageLimits, field: str = "image") -> Image.Image:
    """An `Image` message (encoded bytes or raw pixels) -> PIL image, validated."""
    source = message.WhichOneof("source")
    if source == "content":
        return decode_image(message.content, limits, f"{field}.content")
    if source == "raw":
        return raw_to_image(message.raw, limits, f"{field}.raw")
    raise ImageError("MISSING_IMAGE", "no image was sent (set image.content)", field)


def raw_to_image(raw: image_pb2.RawImage, limits: ImageLimits, field: str) -> Image.Image:
    _check_size(raw.width, raw.height, limits, field)
    if raw.channels not in (1, 3):
        raise ImageError("BAD_RAW_IMAGE", f"channels must be 1 or 3, got {raw.channels}", field)
    expected = raw.width * raw.height * raw.channels
    if len(raw.data) != expected:
        raise ImageError("BAD_RAW_IMAGE", f"expected {expected} bytes of pixels, got {len(raw.data)}", field)
    mode = "L" if raw.channels == 1 else "RGB"
    return Image.frombytes(mode, (raw.width, raw.height), raw.data)


def image_to_raw(image: Image.Image) -> image_pb2.Image:
    """PIL image (L or RGB) -> `Image` with raw pixels, for calls between the services."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image_pb2.Image(
        raw=image_pb2.RawImage(
            width=image.width, height=image.height, channels=1 if image.mode == "L" else 3, data=image.tobytes()
        )
    )
