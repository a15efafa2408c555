"""Image preparation: any format Pillow reads becomes an upright RGB JPEG within the size limit."""

from __future__ import annotations

import io

from PIL import Image
import pytest

from custom_components.gemma_edge.engine.images import (
    DEFAULT_MAX_SIDE,
    MAX_INPUT_PIXELS,
    ImageError,
    prepare_image,
)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def decoded(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    image.load()
    return image


@pytest.mark.parametrize(
    ("fmt", "mode", "size"),
    [
        ("PNG", "RGBA", (640, 480)),
        ("WEBP", "RGB", (1920, 1080)),
        ("TIFF", "CMYK", (800, 600)),
        ("GIF", "P", (300, 200)),
        ("BMP", "RGB", (1, 1)),
        ("PNG", "I;16", (1000, 17)),
        ("JPEG", "L", (4000, 3000)),
        ("PNG", "LA", (33, 777)),
    ],
)
def test_formats_become_jpeg_within_the_limit(fmt: str, mode: str, size: tuple[int, int]) -> None:
    source = Image.new(mode, size, 200 if mode in ("L", "P", "I;16") else None)
    prepared = prepare_image(encode(source, fmt))
    assert prepared.source_format == fmt
    assert (prepared.source_width, prepared.source_height) == size
    assert max(prepared.width, prepared.height) <= DEFAULT_MAX_SIDE
    image = decoded(prepared.jpeg)
    assert image.mode == "RGB" and image.size == (prepared.width, prepared.height)
    # the aspect ratio is kept (to the pixel)
    if max(size) > DEFAULT_MAX_SIDE:
        assert prepared.downscaled
        assert abs(prepared.width / prepared.height - size[0] / size[1]) < 0.05 * size[0] / size[1] + 1 / prepared.height
    else:
        assert (prepared.width, prepared.height) == size


def test_transparency_is_composited_on_white() -> None:
    prepared = prepare_image(encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG"))
    assert min(decoded(prepared.jpeg).getpixel((32, 32))) > 240


def test_exif_orientation_is_applied() -> None:
    """A portrait photo stored landscape with an EXIF rotation comes out portrait."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(Image.new("RGB", (1200, 600), (10, 200, 10)), "JPEG", exif=exif.tobytes())
    prepared = prepare_image(data)
    assert prepared.height > prepared.width and max(prepared.width, prepared.height) == DEFAULT_MAX_SIDE


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (100, 100), color) for color in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    pixel = decoded(prepare_image(out.getvalue()).jpeg).getpixel((50, 50))
    assert pixel[0] > 200 and pixel[2] < 60


def test_max_side_is_configurable_and_clamped() -> None:
    data = encode(Image.new("RGB", (3000, 2000)), "PNG")
    assert max(prepare_image(data, 512).width, prepare_image(data, 512).height) == 512
    assert prepare_image(data, 10).width == 224  # below the minimum: the minimum
    assert prepare_image(data, 10**6).width == 2048  # above the maximum: the maximum


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"garbage bytes that are no image", "not an image"),
        (encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "could not be decoded"),
        (encode(Image.new("RGB", (64, 64)), "PNG")[:60], "could not be decoded"),
    ],
)
def test_bad_bytes_are_a_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        prepare_image(data)


def test_oversized_images_are_refused_before_decoding() -> None:
    side = int(MAX_INPUT_PIXELS**0.5) + 100
    data = encode(Image.new("1", (side, side)), "PNG")  # a few KB on disk, 50+ megapixels decoded
    with pytest.raises(ImageError, match="too large"):
        prepare_image(data)
