"""One dedicated thread that runs jobs one at a time from a bounded priority queue.

The jobs are model calls and ledger writes. llama.cpp contexts are not thread-safe and
their calls block for seconds, so nothing of theirs may run on Home Assistant's event
loop or on two threads at once. Jobs carry a priority: a user request
(``PRIORITY_USER``) is always taken before background work (``PRIORITY_BACKGROUND``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
import itertools
import logging
import queue
import threading
from typing import TypeVar

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

PRIORITY_USER = 0
# automations and AI Tasks: after a person talking, before background work
PRIORITY_AUTOMATION = 5
PRIORITY_BACKGROUND = 10


class WorkerBusyError(RuntimeError):
    """Too many requests are already waiting for the model."""


class WorkerStoppedError(RuntimeError):
    """The worker has been stopped (the engine is unloading)."""


class SerialWorker:
    """A single worker thread with a bounded priority queue of jobs."""

    def __init__(self, name: str = "gemma_edge_model", max_pending: int = 4) -> None:
        """Start the thread; at most max_pending jobs may be queued or running."""
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = (
            queue.PriorityQueue()
        )
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._stopped = False
        self._finished = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The worker thread."""
        return self._thread

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def user_waiting(self) -> bool:
        """Return whether a job more urgent than background work is queued.

        Background jobs yield to it.
        """
        with self._queue.mutex:
            return any(
                priority < PRIORITY_BACKGROUND for priority, _, _ in self._queue.queue
            )

    def in_worker(self) -> bool:
        """Return whether the caller runs on the worker thread."""
        return threading.current_thread() is self._thread

    def submit(self, func: Callable[[], T], priority: int = PRIORITY_USER) -> Future[T]:
        """Queue func; its result or exception arrives in the returned Future."""
        future: Future[T] = Future()
        with self._lock:
            if self._stopped:
                raise WorkerStoppedError("the model worker is stopped")
            if self._pending >= self._max_pending:
                raise WorkerBusyError(
                    f"{self._pending} requests are already waiting for the model"
                )
            self._pending += 1

        def job() -> None:
            try:
                if not future.set_running_or_notify_cancel():
                    return
                try:
                    result = func()
                except BaseException as err:  # noqa: BLE001 - handed to the caller
                    self._done()
                    future.set_exception(err)
                    return
                # free the slot before the caller hears back, so its next request is not
                # "busy"
                self._done()
                future.set_result(result)
            finally:
                self._done()

        self._queue.put((priority, next(self._counter), job))
        return future

    def _run(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            self._finished = False
            job()

    def _done(self) -> None:
        """Release the job's queue slot (once per job)."""
        with self._lock:
            if not self._finished:
                self._finished = True
                self._pending -= 1

    def stop(self, timeout: float | None = 30) -> None:
        """Finish queued jobs, then end the thread and wait for it."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._queue.put((PRIORITY_BACKGROUND + 1, next(self._counter), None))
        if not self.in_worker():
            self._thread.join(timeout)
            if self._thread.is_alive():
                _LOGGER.warning("Model worker did not stop within %s s", timeout)

    def run_sync(self, func: Callable[[], T], priority: int = PRIORITY_USER) -> T:
        """Submit and wait (for plain-Python callers and tests)."""
        if self.in_worker():
            return func()
        return self.submit(func, priority).result()
