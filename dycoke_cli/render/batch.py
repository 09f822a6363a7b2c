"""What `dycoke run` shows on stderr: a progress bar while it runs and a summary table at the end.

Kept apart from render/answer.py (the per-answer views) but built on the console and number formats
of render/__init__.py. When stderr is not a terminal (a Slurm log, a pipe) no bar is drawn: a plain
progress line is printed every LOG_EVERY_S seconds and once at the end, and failures are always
printed as they happen.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from dycoke_cli import render
from dycoke_cli.render import format_bytes, format_seconds

LOG_EVERY_S = 30.0


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} rec/s" if task.speed else "-- rec/s", style="cyan")


class BatchProgress:
    """done / total, rate, ETA and failures of this process's records; only failures when not `enabled`
    (the other ranks of a launcher, which would draw over rank 0's bar)."""

    def __init__(self, enabled: bool = True, label: str = "answering"):
        self.enabled = enabled
        self.label = label
        self.done = self.failed = self.total = 0
        self._bar: Progress | None = None
        self._task = None
        self._started = self._logged = 0.0

    @contextmanager
    def running(self, total: int, skipped: int = 0):
        self.total = total
        if self.enabled and skipped:
            render.notice(f"{skipped} record(s) already in the output: skipped")
        if not self.enabled or not total:
            yield self
            return
        self._started = self._logged = time.monotonic()
        if not render.stderr.is_terminal:  # a log file gets plain lines, never a drawn bar
            yield self
            self._log()  # the closing count: this process's share, done and failed
            return
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                             TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[failed]}"),
                             console=render.stderr, transient=False)
        self._task = self._bar.add_task(self.label, total=total, failed="")
        with self._bar:
            yield self

    def advance(self, line: dict) -> None:
        self.done += 1
        if "error" in line:  # printed by every rank: each knows only its own failures
            self.failed += 1
            render.error(line["error"])
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failed=f"[red]{self.failed} failed[/]" if self.failed else "")
        elif self.enabled and self._started and time.monotonic() - self._logged >= LOG_EVERY_S:
            self._log()

    def notice(self, message: str) -> None:
        if self.enabled:
            render.notice(message)

    def _log(self) -> None:
        self._logged = time.monotonic()
        elapsed = self._logged - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {format_seconds((self.total - self.done) / rate)}" if rate and self.done < self.total else ""
        render.stderr.print(f"{self.label}: {self.done}/{self.total} done, {self.failed} failed, "
                            f"{rate:.2f} rec/s{eta}", markup=False, highlight=False)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _maybe_seconds(value: float | None) -> str:
    return "n/a" if value is None else format_seconds(value)


def summary_rows(s: dict) -> list[tuple[str, str]]:
    """Records, accuracy (overall and per task), latency, visual tokens and peak memory."""
    rows = []
    if s.get("output"):
        rows.append(("output", s["output"]))
    failed = f"{s['failed']:,} failed"
    if s["failed"]:
        failed += (f" ({s['failed_input']:,} cannot run as written, {s['failed_runtime']:,} failed while "
                   "running)")
    rows.append(("records", f"{s['records']:,}: {s['ok']:,} ok, {failed}"))
    if s["scored"]:
        rows.append(("accuracy", f"{_percent(s['accuracy'])} ({s['correct']:,} of {s['scored']:,} scored)"))
        for name, task in s["tasks"].items():
            rows.append((f"  {name}", f"{_percent(task['accuracy'])} ({task['correct']:,} of {task['scored']:,})"))
    lat = s["latency_s"]
    rows.append(("latency", f"mean {_maybe_seconds(lat['mean'])}, p50 {_maybe_seconds(lat['p50'])}, "
                            f"p95 {_maybe_seconds(lat['p95'])}"))
    if s["visual_tokens_before"] is not None:
        rows.append(("visual tokens", f"{s['visual_tokens_before']:,.0f} -> {s['visual_tokens_after']:,.0f} "
                                      "on average"))
    if "peak_gpu_allocated_bytes" in s:
        rows.append(("peak memory", f"{format_bytes(s['peak_gpu_allocated_bytes'])} GPU allocated, "
                                    f"{format_bytes(s['peak_gpu_reserved_bytes'])} reserved"))
    elif "peak_rss_bytes" in s:
        rows.append(("peak memory", f"{format_bytes(s['peak_rss_bytes'])} RSS"))
    return rows


def print_summary(summary: dict, as_json: bool, title: str = "dycoke run") -> None:
    """The table on stderr, or with --json the summary as one JSON object on stdout."""
    if as_json:
        render.print_json(summary)
    else:
        render.lines(summary_rows(summary), title=title)
