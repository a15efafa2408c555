"""Camera snapshots for the model.

Fetch, check, convert, downscale, and keep automations in check. The conversation tool,
the AI Task entity and the ``gemma_edge.ask`` service all get images here.
Automation-driven analysis (the service and AI Tasks) is limited to one snapshot per
camera per configurable interval, so a motion automation firing every second cannot pin
the CPU; a person asking in a conversation is not limited.
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

import aiohttp

from homeassistant.components import camera
from homeassistant.components.conversation import DOMAIN as CONVERSATION_DOMAIN
from homeassistant.components.homeassistant import async_should_expose
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError

from .const import (
    CONF_CAMERA_MIN_INTERVAL,
    CONF_IMAGE_MAX_SIDE,
    DEFAULT_CAMERA_MIN_INTERVAL,
    DEFAULT_IMAGE_MAX_SIDE,
    DOMAIN,
    LOGGER,
)
from .engine.images import ImageError, PreparedImage, prepare_image

SNAPSHOT_TIMEOUT_S = 10


class VisionInputError(HomeAssistantError):
    """A camera or image could not be used (the message says which and why)."""


class CameraRateLimitedError(ServiceValidationError):
    """The camera was analysed too recently for automation-driven analysis."""


def _error(
    cls: type[HomeAssistantError], key: str, **placeholders: Any
) -> HomeAssistantError:
    return cls(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders=placeholders,
    )


def exposed_cameras(hass: HomeAssistant) -> dict[str, str]:
    """Return the cameras exposed to Assist: friendly name -> entity id."""
    return {
        state.name: state.entity_id
        for state in hass.states.async_all(camera.DOMAIN)
        if async_should_expose(hass, CONVERSATION_DOMAIN, state.entity_id)
    }


class CameraVision:
    """Snapshots and images for one entry.

    With the entry's image size limit and its per-camera interval.
    """

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry) -> None:
        """Serve the entry, with no camera analysed yet."""
        self.hass = hass
        self.entry = entry
        self._last_analysed: dict[str, float] = {}

    @property
    def max_side(self) -> int:
        """The longest side, in pixels, of an image given to the model."""
        return int(self.entry.options.get(CONF_IMAGE_MAX_SIDE, DEFAULT_IMAGE_MAX_SIDE))

    @property
    def min_interval(self) -> float:
        """The seconds between two automation-driven analyses of one camera."""
        return float(
            self.entry.options.get(
                CONF_CAMERA_MIN_INTERVAL, DEFAULT_CAMERA_MIN_INTERVAL
            )
        )

    def rate_limit_camera(self, entity_id: str) -> None:
        """Count an automation-driven analysis of this camera.

        Refuse it (CameraRateLimitedError) within the interval.
        """
        now = time.monotonic()
        last = self._last_analysed.get(entity_id)
        if last is not None and now - last < self.min_interval:
            raise _error(
                CameraRateLimitedError,
                "camera_rate_limited",
                entity_id=entity_id,
                interval=f"{self.min_interval:g}",
                wait=f"{self.min_interval - (now - last):.0f}",
            )
        self._last_analysed[entity_id] = now

    async def async_snapshot(
        self, entity_id: str, *, automation: bool
    ) -> PreparedImage:
        """Return a camera's current picture, ready for the model."""
        if automation:
            self.rate_limit_camera(entity_id)
        try:
            image = await camera.async_get_image(
                self.hass, entity_id, timeout=SNAPSHOT_TIMEOUT_S
            )
        except (HomeAssistantError, OSError, aiohttp.ClientError) as err:
            # No such camera, no image in time, or the camera's own error (a camera
            # platform raises HomeAssistantError, or its connection's error).
            raise _error(
                VisionInputError,
                "camera_unavailable",
                entity_id=entity_id,
                error=str(err) or type(err).__name__,
            ) from err
        return await self.async_prepare(image.content, entity_id)

    async def async_snapshot_exposed(self, name: str) -> tuple[str, PreparedImage]:
        """Return a snapshot of a camera exposed to Assist, by its name.

        Used by the conversation tool.
        """
        cameras = exposed_cameras(self.hass)
        entity_id = cameras.get(name) or (name if name in cameras.values() else None)
        if entity_id is None:
            raise _error(VisionInputError, "camera_not_exposed", name=name)
        return entity_id, await self.async_snapshot(entity_id, automation=False)

    async def async_prepare(self, data: bytes | Path, source: str) -> PreparedImage:
        """Turn any image into a JPEG within the size limit.

        The image is bytes, or a file read in the same executor job; decoding blocks,
        so it runs in the executor.
        """
        max_side = self.max_side

        def prepare() -> PreparedImage:
            return prepare_image(
                data.read_bytes() if isinstance(data, Path) else data, max_side
            )

        try:
            image = await self.hass.async_add_executor_job(prepare)
        except (ImageError, OSError) as err:
            raise _error(
                VisionInputError, "image_unreadable", source=source, error=str(err)
            ) from err
        LOGGER.debug(
            "%s: %s %dx%d -> JPEG %dx%d%s",
            source,
            image.source_format,
            image.source_width,
            image.source_height,
            image.width,
            image.height,
            " (downscaled)" if image.downscaled else "",
        )
        return image
