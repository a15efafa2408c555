"""Downloads shown as a flow's progress bar, for the model and the speech flows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
import threading
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowHandler, FlowResult

from .const import DOMAIN, LOGGER
from .engine.download import ChecksumMismatchError, DownloadError, NotEnoughDiskError

type DownloadJob[ResultT] = Callable[
    [Callable[[float], None], threading.Event], ResultT
]


def default_download_dir(hass: HomeAssistant) -> str:
    """Return the default folder for downloaded models.

    Models are large: they are kept out of the config folder (and its backups) where
    possible, in Home Assistant's first media folder.
    """
    media_dirs = list(hass.config.media_dirs.values())
    base = Path(media_dirs[0] if media_dirs else hass.config.path("media"))
    return str(base / "gemma_edge_models")


def download_error_reason(err: Exception) -> str:
    """Return the flow's abort reason for a failed download."""
    if isinstance(err, ChecksumMismatchError):
        return "checksum_mismatch"
    if isinstance(err, NotEnoughDiskError):
        return "not_enough_disk"
    return "download_failed"


class FlowDownload[ResultT]:
    """One blocking download of a flow, run in the executor with a progress bar.

    The flow's ``download`` step calls ``async_start`` (once) and returns
    ``async_progress``; that leads to the flow's ``download_done`` step with ``result``
    set, or its ``download_failed`` step with ``error`` as the abort reason. Closing the
    flow (``cancel``) stops the download thread at its next block; the part file stays
    and a later download resumes it.
    """

    def __init__(self) -> None:
        """Prepare a download that has not started."""
        self._task: asyncio.Task[ResultT] | None = None
        self._cancelled = threading.Event()
        self.result: ResultT | None = None
        self.error = "download_failed"

    @property
    def started(self) -> bool:
        """Whether the download was started."""
        return self._task is not None

    def cancel(self) -> None:
        """Stop the download thread at its next block."""
        self._cancelled.set()

    def async_start(
        self, flow: FlowHandler[Any, Any, Any], job: DownloadJob[ResultT], name: str
    ) -> None:
        """Run ``job(progress, cancelled)`` in the executor, reporting to ``flow``."""
        hass = flow.hass

        def report(fraction: float) -> None:
            hass.loop.call_soon_threadsafe(flow.async_update_progress, fraction)

        async def run() -> ResultT:
            return await hass.async_add_executor_job(job, report, self._cancelled)

        self._task = hass.async_create_background_task(
            run(), f"{DOMAIN} download {name}"
        )

    def async_progress[FlowResultT: FlowResult[Any, Any]](
        self, flow: FlowHandler[Any, FlowResultT, Any], model: str
    ) -> FlowResultT:
        """Show the progress bar while running; when done, go on to the next step."""
        assert self._task is not None
        if not self._task.done():
            return flow.async_show_progress(
                step_id="download",
                progress_action="download",
                progress_task=self._task,
                description_placeholders={"model": model},
            )
        try:
            self.result = self._task.result()
        except (DownloadError, OSError) as err:
            LOGGER.error("Download of %s failed: %s", model, err)
            self.error = download_error_reason(err)
            return flow.async_show_progress_done(next_step_id="download_failed")
        except Exception:
            LOGGER.exception("Unexpected error while downloading %s", model)
            self.error = "unknown"
            return flow.async_show_progress_done(next_step_id="download_failed")
        return flow.async_show_progress_done(next_step_id="download_done")
