"""Crash safety of a multi-setting `dycoke run`: SIGKILL and Ctrl-C (SIGINT) at several moments, rerun,
and every setting's answers file is as if the run had never been stopped: each id exactly once, each
answer the uninterrupted run's.

The CLI runs as a subprocess. Kill moments are drawn with a fixed seed: a time after the start
(imports, model load, encoding) or right after the k-th new answer line in any setting's file, plus up
to 200 ms (mid-generate, mid-write, between settings of one video).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

from conftest import write_clip
from dycoke_cli.batch.answers import read_lines
from test_batch_kill import SAME, stop_after

SETTINGS = ["none", "dycoke", "uniform:budget=0.5"]  # uniform encodes its own frames
TAGS = ["none", "dycoke", "uniform_budget=0.5"]
RECORDS = 17  # 16 questions over 2 videos and a malformed line
STOPS = [signal.SIGKILL, signal.SIGINT] * 2 + [signal.SIGKILL] * 2


def command(questions: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(out), "--model", "random:tiny",
            "--device", "cpu", "--dtype", "float32", "--frames", "2", "--max-new-tokens", "4",
            *[a for spec in SETTINGS for a in ("-c", spec)]]


def files(out: Path) -> list[Path]:
    return [out.with_name(f"{out.stem}.{tag}{out.suffix}") for tag in TAGS]


def total_lines(out: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in files(out) if path.exists())


def test_killed_and_interrupted_runs_resume_every_setting_to_the_uninterrupted_answers(tmp_path):
    for name in ("a", "b"):
        write_clip(tmp_path / f"{name}.mp4", frames=10)
    rows = [json.dumps({"id": f"q{i}", "video": "ab"[i % 2] + ".mp4", "question": f"Question {i}?",
                        **({"options": ["x", "y"], "answer": "B", "task": "t"} if i % 4 == 0 else {})})
            for i in range(RECORDS - 1)]
    rows.insert(5, '{"id": "broken", "video": ')
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(rows) + "\n")

    baseline = tmp_path / "base.jsonl"
    done = subprocess.run(command(questions, baseline), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # the malformed line failed under every setting
    expected = [{line["id"]: line for line in read_lines(path)[0]} for path in files(baseline)]
    assert [len(e) for e in expected] == [RECORDS] * len(SETTINGS)

    def check_complete(out: Path) -> None:
        for path, want in zip(files(out), expected):
            lines, bad = read_lines(path)
            assert bad == 0 and path.read_bytes().endswith(b"\n")
            assert sorted((line["id"] for line in lines), key=str) == sorted(want, key=str)  # each id once
            for line in lines:
                assert {k: line.get(k) for k in SAME} == {k: want[line["id"]].get(k) for k in SAME}, line["id"]

    rng, stopped, partial, episode, attempts = random.Random(4321), 0, 0, 0, 0
    out = tmp_path / "out0.jsonl"
    while stopped < len(STOPS):
        attempts += 1
        assert attempts <= 4 * len(STOPS), "runs keep finishing before their stop moment"
        sig = STOPS[stopped]
        moment = (0, rng.uniform(0.5, 5.0)) if rng.random() < 1 / 3 else (rng.choice([1, 2, 4]), rng.uniform(0, 0.2))
        code = stop_after(command(questions, out), tmp_path, lambda: total_lines(out), *moment, sig=sig, timeout_s=90)
        if code is not None:
            stopped += 1
            # Ctrl-C: exit 130 and nothing partial (one landing while Python is still importing the CLI ends
            # the process by the signal itself, which a shell reports as 130 too); a kill may leave one
            # torn line per file at most.
            assert code in ((130, -signal.SIGINT) if sig == signal.SIGINT else (-signal.SIGKILL,))
        for path in files(out):
            lines, bad = read_lines(path)
            assert bad <= (0 if sig == signal.SIGINT else 1)
            ids = [line["id"] for line in lines]
            assert len(ids) == len(set(ids))
        counts = [len(read_lines(path)[0]) for path in files(out)]
        partial += 0 < sum(counts) < RECORDS * len(SETTINGS)
        if counts == [RECORDS] * len(SETTINGS) and all(read_lines(p)[1] == 0 for p in files(out)):
            check_complete(out)
            episode += 1
            out = tmp_path / f"out{episode}.jsonl"
    assert partial >= 2  # the stops did land while answering

    done = subprocess.run(command(questions, out), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    check_complete(out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary or lock file left
