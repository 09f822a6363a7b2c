"""The entry point under the process's own events: SIGINT and SIGTERM at several moments of a run
(class 11), and a standard output that goes away (class 16). Real subprocesses, real signals, real
pipes; every wait bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clihelp import TINY, dycoke, lines_of, write_questions
from dycoke_cli.batch.answers import read_lines

RECORDS = 12


def start(args: list, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dycoke_cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kwargs)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"finished before the moment came: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.002)


def loading(proc: subprocess.Popen):
    """True once the process has mapped the model's weights (from_pretrained is under way)."""
    def seen() -> bool:
        try:
            return "model.safetensors" in Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            return False
    return seen


def stop(proc: subprocess.Popen, number: int, times: int) -> tuple[int, str]:
    for _ in range(times):
        proc.send_signal(number)
        time.sleep(0.005)
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="the moments are observed through /proc")
def test_signals_at_every_moment_exit_130_or_143_and_leave_a_resumable_file(folder, tmp_path, tiny):
    questions = write_questions(folder, "signals.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    run = ["run", questions, "-o", out, *TINY]
    lock = tmp_path / ".out.jsonl.lock"
    # (moment, signal, how many): started (the lock taken, imports and model lookup to come), loading the
    # weights, answering (a record in progress), and rewriting the file (repairing a torn tail).
    moments = [("started", signal.SIGTERM, 1), ("loading", signal.SIGINT, 3), ("answering", signal.SIGTERM, 1),
               ("rewriting", signal.SIGINT, 4)]
    for moment, number, times in moments:
        if moment == "rewriting":  # a big torn file, so the atomic rewrite takes a while
            _pad_with_answers(out, 150_000)
        done = len(read_lines(out)[0])
        proc = start(run, cwd=tmp_path)
        if moment == "started":
            wait_for(lock.exists, proc)
        elif moment == "loading":
            wait_for(loading(proc), proc)
        elif moment == "answering":
            wait_for(lambda: len(read_lines(out)[0]) > done, proc)
        else:
            wait_for(lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), proc)
        code, err = stop(proc, number, times)
        status = 143 if number == signal.SIGTERM else 130
        word = "terminated" if number == signal.SIGTERM else "interrupted"
        assert (code, err.splitlines()[-1]) == (status, f"error: {word}"), (moment, code, err)
        assert "Traceback" not in err
        ids = [line["id"] for line in read_lines(out)[0]]
        assert len(ids) == len(set(ids)), moment
        assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], moment
    result = dycoke(*run, cwd=tmp_path, timeout=300)  # resume: every id exactly once
    assert result.returncode == 0, result.stderr
    answered = [line["id"] for line in lines_of(out) if not line["id"].startswith("pad")]
    assert sorted(answered) == sorted(f"q{i}" for i in range(RECORDS))


def _pad_with_answers(out: Path, count: int) -> None:
    """Add `count` answer lines of other ids and a torn last line (a crash's leftover) to `out`."""
    lines, _ = read_lines(out)
    pad = "".join(json.dumps({"id": f"pad{i}", "answer": "x" * 100}) + "\n" for i in range(count))
    out.write_bytes("".join(json.dumps(line) + "\n" for line in lines).encode() + pad.encode() + b'{"id": "q')


def test_profile_interrupted_twice_exits_130_and_leaves_no_report(folder, tmp_path, tiny):
    report = tmp_path / "report.json"
    proc = start(["profile", folder / "a.mp4", "-o", report, *TINY, "--repeats", "50"])
    wait_for(loading(proc), proc)
    code, err = stop(proc, signal.SIGINT, 2)
    assert (code, err.splitlines()[-1]) == (130, "error: interrupted"), err
    assert list(tmp_path.iterdir()) == []


# 16. A standard output that goes away ------------------------------------------------------------------

def closed_pipe() -> int:
    """The write end of a pipe whose reader is gone (what `| head -1` leaves once head has exited)."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize("args", [["methods", "--json"], ["--help"], ["ask", "{clip}", "q?", *TINY]])
def test_a_closed_stdout_ends_quietly_with_141(folder, args, tiny):
    write = closed_pipe()
    try:
        result = dycoke(*[str(a).replace("{clip}", str(folder / "a.mp4")) for a in args], stdout=write,
                        stderr=subprocess.PIPE, capture_output=False, timeout=120)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, b"")


@pytest.mark.parametrize("args", [["methods"], ["--help"], ["models", "--json"]])
def test_a_full_stdout_is_one_line_and_exit_1(args):
    with open("/dev/full", "wb") as full:
        result = dycoke(*args, stdout=full, stderr=subprocess.PIPE, capture_output=False, timeout=60)
    assert (result.returncode, result.stderr) == (1, b"error: cannot write to standard output: No space left on "
                                                     b"device\n")


def test_a_pipeline_to_head_gets_its_line_and_no_error(folder, tiny):
    """`dycoke methods --json | head -1` and `dycoke ask ... --json | head -1` (three answers, so later
    ones meet the closed pipe) through a shell: the first line, nothing on stderr, dycoke's status 141."""
    ask = f"ask {folder / 'a.mp4'} one? two? three? {' '.join(TINY)} --json"
    for args, key, value in (("methods --json", "method", "none"), (ask, "question", "one?")):
        result = subprocess.run(f"{sys.executable} -m dycoke_cli {args} | head -1; echo \"${{PIPESTATUS[0]}}\" >&2",
                                shell=True, executable="/bin/bash", capture_output=True, timeout=120)
        assert result.returncode == 0 and result.stderr in (b"141\n", b"0\n"), result.stderr  # 0: done before head
        assert json.loads(result.stdout)[key] == value
