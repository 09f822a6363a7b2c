"""The end-of-run summary, computed from the answers file alone.

Every figure comes from the lines on disk, not from counters kept while running, so the summary of
a resumed run (or of a file `dycoke merge` built) covers all its records, not just the last attempt.
Accuracy is over the scored records that were answered; failures are counted separately.
Latency is `total_s` per answer (the first question of a video also pays for encoding it).
"""

from __future__ import annotations

import math
from pathlib import Path

from dycoke_cli.batch.answers import INPUT, failure_kind, is_failure

MEMORY_KEYS = ("peak_gpu_allocated_bytes", "peak_gpu_reserved_bytes", "peak_rss_bytes")


def summarize(lines: list[dict], output: Path | None = None) -> dict:
    ok = [line for line in lines if not is_failure(line)]
    scored = [line for line in ok if "correct" in line]
    tasks: dict[str, list[dict]] = {}
    for line in scored:
        if line.get("task") is not None:
            tasks.setdefault(str(line["task"]), []).append(line)
    latency = sorted(float(line.get("total_s", 0.0)) for line in ok)
    summary = {
        "output": str(output) if output else None,
        "records": len(lines), "ok": len(ok), "failed": len(lines) - len(ok),
        # of the failed: cannot run as written (fix the line or video, rerun) / may succeed on --retry-failed
        "failed_input": sum(1 for line in lines if failure_kind(line) == INPUT),
        "failed_runtime": sum(1 for line in lines if is_failure(line) and failure_kind(line) != INPUT),
        **_accuracy(scored),
        "tasks": {name: _accuracy(group) for name, group in sorted(tasks.items())},
        "latency_s": {"mean": sum(latency) / len(latency) if latency else None,
                      "p50": _percentile(latency, 50), "p95": _percentile(latency, 95)},
        "visual_tokens_before": _mean(ok, "visual_tokens_before"),
        "visual_tokens_after": _mean(ok, "visual_tokens_after"),
    }
    for key in MEMORY_KEYS:
        values = [line[key] for line in ok if isinstance(line.get(key), int)]
        if values:
            summary[key] = max(values)
    return summary


def _accuracy(scored: list[dict]) -> dict:
    correct = sum(1 for line in scored if line["correct"] is True)
    return {"scored": len(scored), "correct": correct, "accuracy": correct / len(scored) if scored else None}


def _percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _mean(lines: list[dict], key: str) -> float | None:
    values = [line[key] for line in lines if isinstance(line.get(key), (int, float))]
    return sum(values) / len(values) if values else None
