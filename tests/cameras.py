"""Real camera entities for tests: each serves given bytes, raises, or hangs."""

from __future__ import annotations

import asyncio
import io

from PIL import Image
from pytest_homeassistant_custom_component.common import MockPlatform, mock_platform

from homeassistant.components import camera
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component


class StillCamera(camera.Camera):
    """A camera whose snapshot is whatever the test says (bytes, an exception, or a hang)."""

    def __init__(self, name: str, image: bytes | Exception, content_type: str = "image/jpeg", hang_s: float = 0) -> None:
        super().__init__()
        self._attr_name = name
        self._attr_unique_id = name.lower().replace(" ", "_")
        self.image = image
        self.content_type = content_type
        self.hang_s = hang_s
        self.snapshots = 0

    async def async_camera_image(self, width: int | None = None, height: int | None = None) -> bytes | None:
        self.snapshots += 1
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if isinstance(self.image, Exception):
            raise self.image
        return self.image


def picture(width: int, height: int, fmt: str = "JPEG") -> bytes:
    """A snapshot-like picture with some structure."""
    image = Image.new("RGB", (width, height), (90, 120, 60))
    for x in range(0, width, 41):
        image.paste((230, 230, 230), (x, height // 3, min(width, x + 12), height // 2))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


async def async_setup_cameras(hass: HomeAssistant, cameras: list[StillCamera]) -> None:
    """Set the cameras up through Home Assistant's camera component (a `test` platform)."""

    async def async_setup_platform(hass: HomeAssistant, config: dict, async_add_entities, discovery_info=None) -> None:  # type: ignore[no-untyped-def]
        async_add_entities(cameras)

    mock_platform(hass, "test.camera", MockPlatform(async_setup_platform=async_setup_platform))
    assert await async_setup_component(hass, "camera", {"camera": {"platform": "test"}})
    await hass.async_block_till_done()
