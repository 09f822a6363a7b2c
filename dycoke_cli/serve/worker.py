"""The one thread that runs the model, and the bounded queue in front of it.

One generation at a time: a model's forward passes already use every core (or the whole GPU), and a
Session's KV cache belongs to one conversation at a time; batching requests together is later work.
So requests wait in a queue of at most `capacity`; one more is refused at once with 429 and a
Retry-After estimated from recent run times, rather than left to time out.

A job stops between two tokens (engine `should_stop`) when its client disconnects (`cancel`), when
its time limit passes (counted from when it was accepted, queueing included), or when its text hit a
stop string. Events go back to the event loop thread through `loop.call_soon_threadsafe`:
("text", delta), ("done", result) or ("error", ApiError).

On SIGTERM the server drains: new jobs and those still queued get 503, the running one finishes.
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from dycoke_cli.serve.api_errors import ApiError, api_error


@dataclass
class Job:
    """One request's work for the model thread. `work(job)` returns the result; `release` runs once the
    job is over, whatever happened (it frees the request's temporary video)."""

    work: Callable[["Job"], object]
    deadline: float  # time.monotonic() past which it stops
    timeout_s: float
    loop: asyncio.AbstractEventLoop
    stream: bool = False  # emit text deltas as they come
    release: Callable[[], None] = lambda: None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    text_done: bool = False  # a stop string was reached: the answer is complete
    stopped_by: str | None = None  # why generation stopped early: "cancelled", "timed_out" or "stop"

    def cancel(self) -> None:
        """The client went away: stop at the next token (or before starting)."""
        self.cancelled.set()

    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

    def should_stop(self) -> bool:
        """Asked between tokens; the first reason to stop is kept (a late one does not undo an answer)."""
        if self.stopped_by is None:
            if self.cancelled.is_set():
                self.stopped_by = "cancelled"
            elif self.text_done:
                self.stopped_by = "stop"
            elif self.timed_out():
                self.stopped_by = "timed_out"
        return self.stopped_by is not None

    def emit(self, kind: str, value) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def timeout_error(self) -> ApiError:
        return ApiError(504, f"the request took longer than this server's limit of {self.timeout_s:g} s "
                             "(--request-timeout)", "timeout")


class Worker:
    """A queue of at most `capacity` waiting jobs in front of one thread."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._waiting: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._running: Job | None = None
        self._draining = False
        self._stopped = False
        self._recent: collections.deque[float] = collections.deque(maxlen=16)  # seconds per job
        self.counts = {"answered": 0, "cancelled": 0, "timed_out": 0, "failed": 0, "rejected": 0}
        self._thread = threading.Thread(target=self._loop, name="dycoke-model", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`, or refuse it: 429 when the queue is full, 503 while draining."""
        with self._ready:
            if self._draining:
                raise ApiError(503, "the server is shutting down", "shutting_down")
            if len(self._waiting) >= self.capacity:
                self.counts["rejected"] += 1
                wait = self._retry_after()
                raise ApiError(429, f"the queue is full ({len(self._waiting)} waiting, --queue-size "
                                    f"{self.capacity}); retry in {wait} s", "queue_full", {"Retry-After": str(wait)})
            self._waiting.append(job)
            self._ready.notify()

    def _retry_after(self) -> int:
        """Seconds until a place is likely free: the mean recent run time times the jobs ahead."""
        mean = sum(self._recent) / len(self._recent) if self._recent else 1.0
        return max(1, math.ceil(mean * (len(self._waiting) + 1) / max(1, self.capacity)))

    def drain(self) -> None:
        """Take no new job; fail the queued ones with 503; the running one finishes."""
        with self._ready:
            self._draining = True
            waiting, self._waiting = list(self._waiting), collections.deque()
        for job in waiting:
            job.emit("error", ApiError(503, "the server is shutting down", "shutting_down"))
            job.release()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread after the running job."""
        self.drain()
        with self._ready:
            self._stopped = True
            self._ready.notify()
        self._thread.join(timeout_s)

    def health(self) -> dict:
        with self._ready:
            return {"waiting": len(self._waiting), "running": int(self._running is not None),
                    "capacity": self.capacity, "draining": self._draining, **self.counts}

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopped:
                    self._ready.wait()
                if not self._waiting:
                    return
                job = self._running = self._waiting.popleft()
            try:
                event = self._run(job)
            finally:
                with self._ready:
                    self._running = None
                job.release()
            if event is not None:  # once the job is over: its client sees a server ready for the next
                job.emit(*event)

    def _run(self, job: Job) -> tuple[str, object] | None:
        """Run one job (unless it was cancelled or timed out while queued); the event that ends it."""
        result = None
        if not job.should_stop():
            started = time.monotonic()
            try:
                result = job.work(job)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to its client as JSON
                self._count("failed")
                return "error", api_error(exc)
            finally:
                self._recent.append(time.monotonic() - started)
        if job.stopped_by in ("cancelled", "timed_out"):
            self._count(job.stopped_by)
            return ("error", job.timeout_error()) if job.stopped_by == "timed_out" else None
        self._count("answered")
        return "done", result

    def _count(self, key: str) -> None:
        with self._ready:
            self.counts[key] += 1
