"""Crash safety of `dycoke run`: SIGKILL at random moments, rerun, and the result is as if never killed.

The CLI runs as a subprocess. Kill moments are drawn with a fixed seed, either at a time after the
start (during imports, model load, video encoding or the first answers) or right after the k-th new
answer line plus up to 200 ms (mid-generate, mid-write, between records), so every killed run is real
and most make some progress. A torn last line (what a kill inside a write or a power cut leaves) is
also planted once by hand.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from conftest import write_clip
from dycoke_cli.batch.answers import read_lines

KILLS = 10
RECORDS = 31  # 30 questions over 2 videos and a malformed line
# What must not change when a run is interrupted: everything but timings and cache reuse.
SAME = ("id", "video", "question", "options", "answer", "choice", "expected", "correct", "task", "error",
        "prompt_tokens", "generated_tokens", "frames", "visual_tokens_before", "visual_tokens_after")


def command(questions: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(out), "--model", "random:tiny",
            "--device", "cpu", "--dtype", "float32", "--frames", "2", "--max-new-tokens", "4"]


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def stop_after(cmd: list[str], cwd: Path, lines: Callable[[], int], more_lines: int, extra_s: float,
               sig: int = signal.SIGKILL, timeout_s: float = 60) -> int | None:
    """Start `cmd`, send `sig` once `lines()` grew by `more_lines` and `extra_s` passed. Returns the exit
    code of the stopped run (None: it finished first)."""
    start = lines()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    deadline = time.monotonic() + timeout_s
    while lines() < start + more_lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(extra_s)
    if proc.poll() is not None:
        proc.wait()
        return None
    proc.send_signal(sig)
    return proc.wait(timeout=timeout_s)


def run_and_kill(cmd: list[str], out: Path, more_lines: int, extra_s: float, timeout_s: float = 60) -> bool:
    """SIGKILL `cmd` once `more_lines` lines were added to `out` and `extra_s` passed; whether it was
    killed (False: it finished first)."""
    return stop_after(cmd, out.parent, lambda: count_lines(out), more_lines, extra_s, timeout_s=timeout_s) is not None


def test_killed_runs_resume_to_the_uninterrupted_answers(tmp_path):
    for name in ("a", "b"):
        write_clip(tmp_path / f"{name}.mp4", frames=10)
    rows = []
    for i in range(RECORDS - 1):
        row = {"id": f"q{i}", "video": "ab"[i % 2] + ".mp4", "question": f"Question {i}?"}
        if i % 3 == 0:
            row.update(options=["red", "green", "blue"], answer="ABC"[i % 3], task=f"t{i % 2}")
        rows.append(json.dumps(row))
    rows.insert(7, '{"id": "broken", "video": ')  # a malformed line: recorded once, never duplicated
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(rows) + "\n")

    baseline = tmp_path / "baseline.jsonl"
    done = subprocess.run(command(questions, baseline), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # 1: the malformed line failed
    expected = {line["id"]: line for line in read_lines(baseline)[0]}
    assert len(expected) == RECORDS

    def check_complete(out: Path) -> None:
        lines, bad = read_lines(out)
        assert bad == 0 and out.read_bytes().endswith(b"\n")
        ids = [line["id"] for line in lines]
        assert sorted(ids, key=str) == sorted(expected, key=str)  # every id exactly once
        for line in lines:
            want = expected[line["id"]]
            assert {k: line.get(k) for k in SAME} == {k: want.get(k) for k in SAME}, line["id"]

    # Kill, rerun, kill... When the reruns have finished an output file (a fast machine answers
    # everything between two kills), it is checked and the next kills work on a fresh file, so
    # exactly KILLS kills land however fast the machine is.
    rng, killed, partial, episode, attempts, planted = random.Random(1234), 0, 0, 0, 0, False
    out = tmp_path / "out0.jsonl"
    while killed < KILLS:
        attempts += 1
        assert attempts <= 6 * KILLS, "runs keep finishing before their kill moment"
        # A third of the kills come at a time after the start (imports, model load, video encoding,
        # the first answers), the others right after the k-th new answer line (mid-generate, mid-write).
        moment = (0, rng.uniform(0.2, 4.0)) if rng.random() < 1 / 3 else (rng.choice([1, 2]), rng.uniform(0, 0.2))
        if run_and_kill(command(questions, out), out, *moment):
            killed += 1
        lines, bad = read_lines(out)
        assert bad <= 1  # at most a torn last line, which the next run repairs
        ids = [line["id"] for line in lines]
        assert len(ids) == len(set(ids))
        partial += 0 < len(ids) < RECORDS
        if len(ids) == RECORDS and bad == 0:
            check_complete(out)
            episode += 1
            out = tmp_path / f"out{episode}.jsonl"
        if killed >= KILLS // 2 and not planted:
            planted = True
            with open(out, "ab") as f:  # plant a torn line, as a kill inside write() would leave
                f.write(b'{"id": "q19", "answer": "half')
    assert partial >= 3  # the kills did land while answering

    done = subprocess.run(command(questions, out), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    check_complete(out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
