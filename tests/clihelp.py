"""Running the real `dycoke` in a subprocess, as users do, bounded by a timeout; and what every bad
input must look like: exactly one line on stderr, starting with "error: ", and the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

TINY = ["--model", "random:tiny", "--device", "cpu", "--dtype", "float32", "--frames", "2", "--max-new-tokens", "2"]


def dycoke(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """`python -m dycoke_cli ARGS` with stdout and stderr captured as bytes (`input=` feeds stdin)."""
    kwargs.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-m", "dycoke_cli", *map(str, args)], timeout=timeout, **kwargs)


# The peak RSS (KiB) of the process that evaluates it, since its exec: /proc/self/status's VmHWM, not
# getrusage's ru_maxrss, which also keeps the RSS of the parent (this test process) at fork.
PEAK_KIB = "int(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))"


def measured(*args, timeout: float = 120, **kwargs) -> tuple[subprocess.CompletedProcess, int]:
    """`dycoke ARGS` run inside a small Python wrapper that reports the process's peak RSS (KiB) on its
    last stdout line; returns the result (that line removed) and the peak."""
    code = ("import sys\nfrom dycoke_cli import signals\nsignals.install()\n"
            "from dycoke_cli.cli import app\n"
            "try:\n    app(sys.argv[1:], prog_name='dycoke')\nexcept SystemExit as e:\n    status = e.code\n"
            "sys.stdout.flush()\n"
            f"print('\\nPEAK', {PEAK_KIB}, status, flush=True)\n")
    kwargs.setdefault("capture_output", True)
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], timeout=timeout, **kwargs)
    out, _, last = result.stdout.rstrip(b"\n").rpartition(b"\n")
    _, peak, status = last.split()
    result.stdout, result.returncode = out, int(status)
    return result, int(peak)


def one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single error line of `result`, after checking the exit code and that nothing else was said."""
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code, (result.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def lines_of(path: Path) -> list[dict]:
    """Every line of an answers file, after checking that each is whole, valid JSON."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a torn last line"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def write_questions(folder: Path, name: str, count: int) -> Path:
    """`count` questions q0, q1, ... alternating between folder/b.mp4 and folder/a.mp4."""
    rows = [{"id": f"q{i}", "video": "a.mp4" if i % 2 else "b.mp4", "question": f"What is {i}?"} for i in range(count)]
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@contextmanager
def held(path: Path):
    """Another process holding the one-writer locks of `path` (dycoke_cli.outputs.exclusive) for the
    block; yields it, and SIGKILLs it at the end (it never releases: the kernel drops its locks)."""
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom pathlib import Path\nfrom dycoke_cli.outputs import exclusive\n"
                               f"with exclusive(Path({str(path)!r})):\n    print('held', flush=True)\n    time.sleep(60)\n"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
