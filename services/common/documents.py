"""Documents into page images: PDF (rendered by pdfium through pypdfium2), multi-page TIFF (Pillow), or any
single image the image module decodes. Limits on the document (bytes, pages) are checked before any page is
rendered, and each page's limits (pixels, decoded size) before it is; a broken or encrypted PDF is an
`ImageError` with a reason, like a bad image.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator

from PIL import Image, ImageSequence

from services.common.images import (
    FORMATS,
    ImageError,
    check_decoded_size,
    check_size,
    decode_image,
    normalize_mode,
)
from services.common.settings import ImageLimits

DEFAULT_DPI = 200
MAX_DPI = 400
# pdfium is not thread-safe: one render at a time in the process
_PDFIUM = threading.Lock()


def open_document(data: bytes, limits: ImageLimits, dpi: int = 0, field: str = "content") -> tuple[int, Iterator]:
    """(number of pages, an iterator of the pages as 8-bit RGB images); raises ImageError."""
    if not data:
        raise ImageError("EMPTY_DOCUMENT", "the document is empty (0 bytes)", field)
    if len(data) > limits.max_document_bytes:
        raise ImageError(
            "DOCUMENT_TOO_LARGE", f"the document is {len(data)} bytes; the limit is {limits.max_document_bytes}", field
        )
    if not 0 <= dpi <= MAX_DPI:
        raise ImageError("BAD_DPI", f"dpi must be between 1 and {MAX_DPI} (0: {DEFAULT_DPI})", "dpi")
    if data[:1024].lstrip().startswith(b"%PDF"):
        return _pdf(data, limits, dpi or DEFAULT_DPI, field)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        frames = getattr(image, "n_frames", 1)
    except Exception:
        frames = 1  # decode_image below gives the reason
    if frames <= 1:
        return 1, iter([decode_image(data, limits, field)])
    _check_pages(frames, limits, field)
    return frames, _frames(image, limits, field)


def _check_pages(count: int, limits: ImageLimits, field: str) -> None:
    if count > limits.max_document_pages:
        raise ImageError(
            "TOO_MANY_PAGES", f"the document has {count} pages; the limit is {limits.max_document_pages}", field
        )


def _frames(image: Image.Image, limits: ImageLimits, field: str) -> Iterator[Image.Image]:
    for number, frame in enumerate(ImageSequence.Iterator(image), 1):
        where = f"{field} (page {number})"
        check_size(*frame.size, limits, where)
        check_decoded_size(frame.mode, *frame.size, limits, where)
        try:
            yield normalize_mode(frame.copy())
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageError("CORRUPT_IMAGE", f"page {number} is corrupt: {error}", where) from error


def _pdf(data: bytes, limits: ImageLimits, dpi: int, field: str) -> tuple[int, Iterator[Image.Image]]:
    import pypdfium2

    with _PDFIUM:
        try:
            document = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as error:
            if "password" in str(error).lower():
                reason = "the PDF is encrypted: send it without a password"
                raise ImageError("ENCRYPTED_DOCUMENT", reason, field) from error
            raise ImageError("CORRUPT_DOCUMENT", f"not a readable PDF: {error}", field) from error
        count = len(document)
    if count == 0:
        raise ImageError("EMPTY_DOCUMENT", "the PDF has no pages", field)
    _check_pages(count, limits, field)
    return count, _pdf_pages(document, count, limits, dpi, field)


def _pdf_pages(document, count: int, limits: ImageLimits, dpi: int, field: str) -> Iterator[Image.Image]:
    try:
        for index in range(count):
            with _PDFIUM:
                page = document[index]
                width_pt, height_pt = page.get_size()
                # at `dpi`, shrunk where needed so that the page stays within the pixel limits
                scale = dpi / 72
                pixels = width_pt * height_pt * scale * scale
                if pixels > limits.max_image_pixels:
                    scale *= math.sqrt(limits.max_image_pixels / pixels) * 0.99
                scale = min(scale, limits.max_image_side / max(width_pt, height_pt, 1))
                image = page.render(scale=scale).to_pil().convert("RGB")
                page.close()
            yield image
    finally:
        with _PDFIUM:
            document.close()
