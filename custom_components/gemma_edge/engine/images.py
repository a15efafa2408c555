"""Camera snapshots and image attachments made ready for the model.

Any format in, JPEG out. llama.cpp's image decoder (stb_image) reads JPEG, PNG, BMP and
GIF only, and the number of image tokens (prompt tokens the model must evaluate) grows
with the pixel count. So every image is decoded with Pillow, turned upright (EXIF
orientation), flattened to RGB, shrunk so its longest side is at most ``max_side``
pixels, and encoded as JPEG. Plain Python, blocking: run it in an executor.
"""

from __future__ import annotations

from dataclasses import dataclass
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

# Gemma 4's projector turns each 48x48 pixel block into one image token (16 px patches
# merged 3x3), so 768 px on the longest side costs at most 16 x 16 = 256 tokens (144 for
# 16:9).
DEFAULT_MAX_SIDE = 768
MIN_SIDE = 224
MAX_SIDE = 2048
# Snapshots larger than this are refused before decoding (a 50-megapixel frame is not a
# camera snapshot, and decoding it would take hundreds of MB).
MAX_INPUT_PIXELS = 50_000_000
JPEG_QUALITY = 90


class ImageError(ValueError):
    """The bytes are not an image we can use; the message says why."""


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the model."""

    jpeg: bytes
    width: int
    height: int
    source_format: str
    source_width: int
    source_height: int

    @property
    def downscaled(self) -> bool:
        """The image was shrunk from its source size."""
        return (self.width, self.height) != (self.source_width, self.source_height)


def prepare_image(data: bytes, max_side: int = DEFAULT_MAX_SIDE) -> PreparedImage:
    """Decode any image Pillow reads, shrink it to ``max_side``, encode it as JPEG."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    max_side = max(MIN_SIDE, min(MAX_SIDE, int(max_side)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as source:
                source_format = source.format or "unknown"
                width, height = source.size
                _check_pixels(width, height)
                source.seek(0)  # the first frame of an animation
                image = ImageOps.exif_transpose(source)
                image = _to_rgb(image)
                image.thumbnail(
                    (max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0
                )
                out = io.BytesIO()
                image.save(out, format="JPEG", quality=JPEG_QUALITY)
    except ImageError:
        raise
    except UnidentifiedImageError as err:
        raise ImageError(
            f"the data is not an image Pillow can read ({len(data)} bytes)"
        ) from err
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        raise ImageError(f"the image could not be decoded: {err}") from err
    return PreparedImage(
        jpeg=out.getvalue(),
        width=image.width,
        height=image.height,
        source_format=source_format,
        source_width=width,
        source_height=height,
    )


def _check_pixels(width: int, height: int) -> None:
    """Raise ImageError when the image has more than MAX_INPUT_PIXELS pixels."""
    if width * height > MAX_INPUT_PIXELS:
        raise ImageError(f"the image is too large ({width}x{height} pixels)")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Return the image as RGB pixels.

    Transparency is composited on white, 16-bit and float modes are scaled to 8 bits.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
