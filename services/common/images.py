"""Image decoding and validation with Pillow, done once at the edge of the system.

Accepts PNG, JPEG, TIFF, WebP and BMP; applies EXIF orientation; converts grayscale, palette,
alpha and 16-bit images to 8-bit RGB. Before any pixel is decoded, the header alone is checked: bytes,
pixels, side, pages, and the memory the decoded image would take (its own pixels plus the 8-bit RGB
copy), so a small file that would decode into gigabytes (a 16-bit 6300x6300 PNG) is refused at once.
Every failure is an `ImageError` with a reason a client can act on.
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
            check_size(width, height, limits, field)
            _check_header(image, limits, field)
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


def check_size(width: int, height: int, limits: ImageLimits, field: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError("EMPTY_IMAGE", f"the image has no pixels ({width}x{height})", field)
    if width * height > limits.max_image_pixels or max(width, height) > limits.max_image_side:
        raise ImageError(
            "TOO_MANY_PIXELS",
            f"the image is {width}x{height} pixels; the limits are {limits.max_image_pixels} pixels "
            f"and {limits.max_image_side} per side",
            field,
        )


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Memory that decoding an image of `mode` takes at its peak: its own pixels and the 8-bit RGB copy."""
    own = len(Image.new(mode, (1, 1)).tobytes()) if mode not in ("P", "PA") else 4  # palette goes through RGBA
    return width * height * (own + 3)


def _check_header(image: Image.Image, limits: ImageLimits, field: str) -> None:
    pages = getattr(image, "n_frames", 1)
    if pages > 1:
        raise ImageError(
            "MULTI_PAGE_IMAGE",
            f"the image has {pages} pages or frames; send one page per request, or the file to ProcessDocument",
            field,
        )
    check_decoded_size(image.mode, *image.size, limits, field)


def check_decoded_size(mode: str, width: int, height: int, limits: ImageLimits, field: str) -> None:
    """Refuse, from its header alone, an image whose decoding would take more than `max_decoded_mb`."""
    needed = decoded_bytes(mode, width, height)
    if needed > limits.max_decoded_mb * 1024 * 1024:
        raise ImageError(
            "IMAGE_TOO_LARGE_DECODED",
            f"the {width}x{height} {mode} image would take {needed // 2**20} MB decoded; "
            f"the limit is {limits.max_decoded_mb} MB (send it smaller: 8-bit and about "
            f"{limits.max_decoded_mb * 2**20 // 6 // 1_000_000} megapixels at most)",
            field,
        )


def normalize_mode(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is flattened onto white paper."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # integers: the high byte of 16-bit samples, in place
        array = np.asarray(image)
        if array.size and array.max() > 255:
            array = array >> 8
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        high = float(array.max()) if array.size else 0.0
        image = Image.fromarray(np.clip(array * (255.0 / max(high, 1e-9)), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def image_from_proto(
    message: image_pb2.Image, limits: ImageLimits, field: str = "image", allow_raw: bool = True
) -> Image.Image:
    """An `Image` message (encoded bytes or raw pixels) -> PIL image, validated. The public API passes
    `allow_raw=False`: raw pixels are for calls between the services, and would get around the byte limit."""
    source = message.WhichOneof("source")
    if source == "content":
        return decode_image(message.content, limits, f"{field}.content")
    if source == "raw" and not allow_raw:
        raise ImageError(
            "RAW_NOT_ACCEPTED",
            "image.raw is for calls between the services; send the image file in image.content",
            f"{field}.raw",
        )
    if source == "raw":
        return raw_to_image(message.raw, limits, f"{field}.raw")
    raise ImageError("MISSING_IMAGE", "no image was sent (set image.content)", field)


def raw_to_image(raw: image_pb2.RawImage, limits: ImageLimits, field: str) -> Image.Image:
    check_size(raw.width, raw.height, limits, field)
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
