"""Image decoding and validation: formats, orientation, modes, limits, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from services.common.images import ImageError, decode_image, image_to_raw, raw_to_image
from services.common.settings import ImageLimits
from tests.conftest import png_bytes

LIMITS = ImageLimits()


@pytest.mark.parametrize("format", ["PNG", "JPEG", "TIFF", "WEBP", "BMP"])
def test_decodes_every_supported_format(format):
    image = Image.new("RGB", (40, 20), (10, 200, 30))
    decoded = decode_image(png_bytes(image, format), LIMITS)
    assert decoded.size == (40, 20) and decoded.mode == "RGB"
    assert abs(int(decoded.getpixel((5, 5))[1]) - 200) < 12


def test_applies_exif_orientation():
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    decoded = decode_image(png_bytes(image, "JPEG", exif=exif), LIMITS)
    assert decoded.size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16", "1", "CMYK"])
def test_converts_modes_to_rgb(mode):
    image = Image.new("RGB", (16, 8), (0, 0, 0)).convert(mode)
    decoded = decode_image(png_bytes(image, "TIFF" if mode == "CMYK" else "PNG"), LIMITS)
    assert decoded.mode == "RGB"


def test_sixteen_bit_is_scaled_not_clipped():
    array = np.full((8, 8), 32768, dtype=np.uint16)
    decoded = decode_image(png_bytes(Image.fromarray(array).convert("I;16")), LIMITS)
    assert 120 <= decoded.getpixel((0, 0))[0] <= 135


def test_transparent_pixels_become_white_paper():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(png_bytes(image), LIMITS).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "EMPTY_IMAGE"),
        (b"hello, not an image", "UNSUPPORTED_IMAGE"),
        (b"%PDF-1.4 a pdf is not an image", "UNSUPPORTED_IMAGE"),
    ],
)
def test_rejects_non_images(data, reason):
    with pytest.raises(ImageError) as caught:
        decode_image(data, LIMITS)
    assert caught.value.reason == reason and caught.value.field == "image.content"


def test_rejects_truncated_and_corrupt():
    data = png_bytes(Image.effect_noise((200, 200), 50).convert("RGB"))
    with pytest.raises(ImageError) as caught:
        decode_image(data[: len(data) // 2], LIMITS)
    assert caught.value.reason == "CORRUPT_IMAGE"
    corrupt = bytearray(data)
    corrupt[100:140] = b"\x00" * 40
    with pytest.raises(ImageError):
        decode_image(bytes(corrupt), LIMITS)


def test_limits_bytes_and_pixels_before_decoding():
    big = png_bytes(Image.new("L", (5000, 5000), 255))  # compresses to a few KB: a small bomb
    with pytest.raises(ImageError) as caught:
        decode_image(big, ImageLimits(max_image_pixels=1_000_000))
    assert caught.value.reason == "TOO_MANY_PIXELS"
    with pytest.raises(ImageError) as caught:
        decode_image(big, ImageLimits(max_image_bytes=100))
    assert caught.value.reason == "IMAGE_TOO_LARGE"


def test_raw_round_trip_and_validation():
    image = Image.new("L", (7, 3), 99)
    message = image_to_raw(image)
    assert raw_to_image(message.raw, LIMITS, "raw").tobytes() == image.tobytes()
    message.raw.data = message.raw.data[:-1]
    with pytest.raises(ImageError, match="expected 21 bytes"):
        raw_to_image(message.raw, LIMITS, "raw")


def _png_header_only(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    """A PNG whose header claims `width`x`height` with a few bytes of pixel data: what a hostile caller sends."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_a_sixteen_bit_giant_is_refused_from_its_header_without_decoding():
    import tracemalloc

    bomb = _png_header_only(6300, 6300, 16, 0)  # 39.7 Mpx: within the pixel limit, 198 MB once decoded
    tracemalloc.start()
    with pytest.raises(ImageError) as caught:
        decode_image(bomb, LIMITS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert caught.value.reason == "IMAGE_TOO_LARGE_DECODED"
    assert "6300x6300" in caught.value.description
    assert peak < 5 * 2**20  # the header was read, no pixel buffer was made


def test_an_eight_bit_phone_photo_of_the_same_pixels_budget_passes_the_header_checks():
    from services.common.images import decoded_bytes

    assert decoded_bytes("RGB", 4000, 3000) < LIMITS.max_decoded_mb * 2**20  # 12 Mpx camera
    assert decoded_bytes("I;16", 6300, 6300) > LIMITS.max_decoded_mb * 2**20


def test_multi_page_tiff_is_refused_clearly():
    import io

    pages = [Image.new("L", (20, 10), level) for level in (0, 128, 255)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageError) as caught:
        decode_image(buffer.getvalue(), LIMITS)
    assert caught.value.reason == "MULTI_PAGE_IMAGE" and "3 pages" in caught.value.description


def _seed_images() -> list[bytes]:
    image = Image.new("RGB", (48, 32), "white")
    image.paste((20, 20, 20), (8, 8, 40, 20))
    return [png_bytes(image, kind) for kind in ("PNG", "JPEG", "TIFF", "WEBP", "BMP")]


SEEDS = _seed_images()


def test_fuzzed_images_decode_or_fail_with_an_image_error_only():
    """Mutated bytes of valid images of every format (fixed seed, derandomised): decoding either gives 8-bit
    RGB or raises ImageError; nothing else escapes (no crash, no other exception)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    limits = ImageLimits(max_image_pixels=4_000_000, max_decoded_mb=64)

    @settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        seed=st.sampled_from(SEEDS),
        edits=st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=8),
        cut=st.integers(0, 4096),
        tail=st.binary(max_size=32),
    )
    def decode_mutated(seed, edits, cut, tail):
        data = bytearray(seed)
        for position, value in edits:
            data[position % len(data)] = value
        data = bytes(data[: max(1, len(data) - cut % len(data))]) + tail
        try:
            image = decode_image(data, limits)
        except ImageError as error:
            assert error.reason and error.description
            return
        assert image.mode == "RGB" and image.width * image.height <= limits.max_image_pixels

    decode_mutated()
