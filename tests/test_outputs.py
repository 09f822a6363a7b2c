"""Files the tool writes, under attack or on a full disk: a planted lock, two names for one file,
a planted temporary, a device as output, a write that fails, an output reached through a link.
After every case each answers file holds every id at most once, every line is whole JSON, and no
file other than those named on the command line changed. Every command runs in a subprocess."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from clihelp import TINY, dycoke, held, lines_of, measured, one_line, write_questions


def answered(folder: Path, name: str, count: int) -> Path:
    """An answers file holding answers to q0..q{count-1}, as `dycoke run` writes them (about 1.2 KB each)."""
    out = folder / name
    out.write_text("".join(json.dumps({"id": f"q{i}", "video": "b.mp4", "question": f"What is {i}?",
                                       "answer": "x" * 1200}) + "\n" for i in range(count)))
    return out


# 1. A planted lock file never redirects a write ----------------------------------------------------

@pytest.mark.parametrize("kind", ["link-to-a-victim", "link-to-the-answers", "directory", "fifo"])
def test_a_planted_lock_is_refused_and_changes_nothing(folder, tmp_path, kind):
    questions = write_questions(folder, "planted.jsonl", 1)
    out = tmp_path / "out.jsonl"
    out.write_bytes((answered(folder, f"planted-{kind}.jsonl", 1)).read_bytes())
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    lock = tmp_path / ".out.jsonl.lock"
    if kind == "link-to-a-victim":
        lock.symlink_to(victim)
    elif kind == "link-to-the-answers":
        lock.symlink_to(out)
    elif kind == "directory":
        lock.mkdir()
    else:
        os.mkfifo(lock)
    before = out.read_bytes()
    line = one_line(dycoke("run", questions, "-o", out, *TINY, timeout=60))
    assert str(lock) in line and "remove it" in line
    assert victim.read_bytes() == b"precious\n" and out.read_bytes() == before
    assert lock.is_symlink() or lock.is_dir() or stat.S_ISFIFO(lock.lstat().st_mode)  # left as it was


# 2. The lock belongs to the file, not to its name --------------------------------------------------

@pytest.mark.parametrize("second_name", ["hard-link", "link-in-another-folder"])
def test_a_second_name_for_a_file_in_use_is_refused(folder, tmp_path, second_name):
    out = answered(folder, f"named-{second_name}.jsonl", 1)
    before = out.read_bytes()
    other = tmp_path / "elsewhere" / "other.jsonl"
    other.parent.mkdir()
    if second_name == "hard-link":
        os.link(out, other)
    else:
        other.symlink_to(out)
    questions = write_questions(folder, "names.jsonl", 3)
    with held(out):
        line = one_line(dycoke("run", questions, "-o", other, *TINY, timeout=60))
        assert "is being written by another dycoke process" in line
        line = one_line(dycoke("merge", out, "-o", other, timeout=60))
        assert "is being written by another dycoke process" in line
    assert out.read_bytes() == before and [line["id"] for line in lines_of(out)] == ["q0"]


# 3. merge: a fresh temporary file, devices refused, nothing left behind on failure -----------------

def test_merge_ignores_a_planted_temporary_and_refuses_devices(folder, tmp_path):
    shard = answered(folder, "shard.jsonl", 2)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    planted = tmp_path / ".merged.jsonl.tmp"
    planted.symlink_to(victim)
    merged = tmp_path / "merged.jsonl"
    result = dycoke("merge", shard, "-o", merged, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line["id"] for line in lines_of(merged)] == ["q0", "q1"]
    assert victim.read_bytes() == b"precious\n" and planted.is_symlink()
    for device in ("/dev/null", "/dev/full"):
        line = one_line(dycoke("merge", shard, "-o", device, timeout=60))
        assert line == f"error: --output {device} is not a regular file (a device or a pipe); give a file path"
        assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_merge_that_fails_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(folder, tmp_path):
    shard = answered(folder, "big-shard.jsonl", 3)
    merged = tmp_path / "merged.jsonl"
    merged.write_bytes(b'{"id": "old"}\n')
    # A file size limit of 2 KiB: the merged file cannot be written, as on a full disk.
    result = dycoke("merge", shard, "-o", merged, timeout=60, preexec_fn=_file_size_limit(2048))
    line = one_line(result, code=1)
    assert line.startswith(f"error: cannot write {merged}: File too large")
    assert merged.read_bytes() == b'{"id": "old"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.jsonl"]


def _file_size_limit(size: int):
    """A preexec_fn capping the size of any file the child writes (EFBIG past it: Python ignores SIGXFSZ)."""
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


# 4. A device as answers file, and a write that fails ----------------------------------------------

@pytest.mark.parametrize("device", ["/dev/full", "/dev/null", "/dev/zero"])
def test_a_device_as_answers_file_is_refused_at_once_in_bounded_memory(folder, device):
    questions = write_questions(folder, "device.jsonl", 1)
    result, peak_kib = measured("run", questions, "-o", device, *TINY, timeout=60)
    assert one_line(result) == (f"error: --output {device} is not a regular file (a device or a pipe); "
                                "give a file path")
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib // 1024} MiB"


def test_a_failed_write_stops_the_run_and_keeps_every_whole_line(folder, tmp_path, tiny):
    out = tmp_path / "out.jsonl"
    out.write_bytes(answered(folder, "first.jsonl", 1).read_bytes())
    before = out.read_bytes()
    questions = write_questions(folder, "more.jsonl", 4)
    result = dycoke("run", questions, "-o", out, *TINY, timeout=120, preexec_fn=_file_size_limit(2048))
    err = result.stderr.decode().splitlines()
    assert result.returncode == 1 and err[0] == "note: 1 record(s) already in the output: skipped", err
    assert len(err) == 2 and err[1].startswith(f"error: cannot write {out}: File too large;"), err
    assert out.read_bytes() == before  # the line that did not fit was cut back whole
    rerun = dycoke("run", questions, "-o", out, *TINY, timeout=120)  # room again: it resumes
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(line["id"] for line in lines_of(out)) == ["q0", "q1", "q2", "q3"]


# 5. An output reached through a link is repaired and appended where it lives ------------------------

def test_an_output_through_a_link_is_repaired_in_place(folder, tmp_path, tiny):
    real = tmp_path / "real.jsonl"
    real.write_bytes(answered(folder, "linked.jsonl", 1).read_bytes() + b'{"id": "q1", "answer": "half')
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    result = dycoke("run", write_questions(folder, "linked-more.jsonl", 3), "-o", link, *TINY, timeout=120)
    assert result.returncode == 0, result.stderr
    assert b"dropped 1 incomplete line" in result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert sorted(line["id"] for line in lines_of(real)) == ["q0", "q1", "q2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "real.jsonl"]
