"""Values read as what they are (class 12) and errors that stay on one line (class 13): the usage
layer of the real `dycoke`, in subprocesses."""

from __future__ import annotations

import os

import pytest

from clihelp import TINY, dycoke, one_line, write_questions


# 12. Values read as what they are ----------------------------------------------------------------------

def test_unicode_digits_and_huge_seeds_are_usage_errors(folder):
    questions = write_questions(folder, "shard.jsonl", 1)
    assert one_line(dycoke("run", questions, "--shard", "\u00b9/2", *TINY)) == (
        "error: --shard \u00b9/2: expected i/N with 0 <= i < N, e.g. 0/4")
    env = {**os.environ, "DYCOKE_SEED": str(2**70)}
    line = one_line(dycoke("ask", folder / "a.mp4", "q?", *TINY, env=env))
    assert line.startswith("error: Invalid value for '--seed'") and "9223372036854775807" in line


@pytest.mark.parametrize("value, traceback", [("false", False), ("0", False), ("no", False), ("1", True),
                                              ("true", True)])
def test_debug_variable_is_read_as_a_boolean(folder, value, traceback):
    result = dycoke("ask", folder / "missing.mp4", "q?", *TINY, env={**os.environ, "DYCOKE_DEBUG": value})
    assert result.returncode != 0
    if traceback:
        assert b"Traceback" in result.stderr
    else:
        assert one_line(result) == f"error: video not found: {folder / 'missing.mp4'}"


# 13. Control characters in names -------------------------------------------------------------------------

def test_a_newline_in_a_file_or_model_name_stays_on_one_line(folder, tmp_path):
    odd = tmp_path / "two\nlines.mp4"
    assert one_line(dycoke("ask", odd, "q?", *TINY)) == f"error: video not found: {tmp_path}/two\\nlines.mp4"
    odd.write_text("not a video\n")
    assert "two\\nlines.mp4" in one_line(dycoke("ask", odd, "q?", *TINY))
    line = one_line(dycoke("ask", folder / "a.mp4", "q?", *TINY, "--model", "some\nmodel\x1b[31m"))
    assert "some\\nmodel\\x1b[31m" in line
