"""Endless, oversized and odd inputs: every one bounded in time and memory and answered with one line
(a chat keeps going). Every command runs in a subprocess, as users run it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from clihelp import TINY, dycoke, lines_of, measured, one_line
from dycoke_cli.inputs import MAX_LINE_BYTES

GiB_KIB = 1024 * 1024


# 6. Endless or oversized input -------------------------------------------------------------------------

def test_a_questions_file_that_never_ends_or_never_opens_is_refused(folder, tmp_path):
    result, peak = measured("run", "/dev/zero", "-o", tmp_path / "out.jsonl", *TINY, timeout=60)
    assert one_line(result) == ("error: questions file '/dev/zero' is not a regular file (a pipe or a device); "
                                "pipe it in with - instead")
    assert peak < GiB_KIB
    fifo = tmp_path / "questions.jsonl"
    os.mkfifo(fifo)  # nobody will ever write to it
    started = time.monotonic()
    line = one_line(dycoke("run", fifo, "-o", tmp_path / "out.jsonl", *TINY, timeout=60))
    assert "is not a regular file" in line and time.monotonic() - started < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["questions.jsonl"]  # no answers file left behind


def test_endless_standard_input_is_cut_at_the_limit(folder, tmp_path):
    with open("/dev/zero", "rb") as zeros:
        result, peak = measured("run", "-", "-o", tmp_path / "out.jsonl", *TINY, stdin=zeros, timeout=120)
        assert one_line(result) == "error: standard input is longer than 256 MiB, the limit; split it"
        assert peak < GiB_KIB, f"peak RSS {peak // 1024} MiB"
        result, peak = measured("ask", folder / "a.mp4", "-", *TINY, stdin=zeros, timeout=60)
        assert one_line(result) == "error: the question on standard input is longer than 1 MiB, the limit"
        assert peak < GiB_KIB


def test_a_huge_question_of_words_is_refused(folder):
    words = b"what happens " * (10_000_000 // 13)  # 10 MB
    line = one_line(dycoke("ask", folder / "a.mp4", "-", *TINY, input=words, timeout=60))
    assert line == "error: the question on standard input is longer than 1 MiB, the limit"


def test_an_overlong_record_fails_alone(folder, tmp_path, tiny):
    rows = [json.dumps({"id": "first", "video": "a.mp4", "question": "What?"}),
            json.dumps({"id": "long", "video": "a.mp4", "question": "w " * (MAX_LINE_BYTES // 2)}),
            json.dumps({"id": "last", "video": "a.mp4", "question": "And?"})]
    questions = folder / "long.jsonl"
    questions.write_text("\n".join(rows) + "\n")
    out = tmp_path / "long.answers.jsonl"
    result = dycoke("run", questions, "-o", out, *TINY, timeout=120)
    assert result.returncode == 1, result.stderr
    by_id = {line["id"]: line for line in lines_of(out)}
    assert sorted(by_id, key=str) == ["first", "last", "line:2"]
    length = len(rows[1].encode())
    assert by_id["line:2"] == {"id": "line:2", "error": f"line 2: {length:,} bytes, longer than the 4 MiB a line may "
                                                        "hold", "failure": "input"}


@pytest.fixture(scope="module")
def short_context(tiny, tmp_path_factory) -> Path:
    """random:tiny saved as a user's folder with a context of 1,024 positions."""
    import shutil

    folder = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(tiny.source.folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 1024
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_chat_refuses_lines_and_histories_that_do_not_fit_and_goes_on(folder, short_context):
    """Video 255 tokens + new 2: a 400-word line fits once, not twice; a 200 KB line never; a 2 MB line
    is over the size limit. Each refusal is one line, and the chat answers the next question."""
    words = "w " * 400
    feed = "\n".join([words, words, "v " * 100_000, "x" * 2_000_000, "Hi?", "/bye"]).encode() + b"\n"
    args = ["chat", folder / "a.mp4", *TINY, "--model", short_context]
    started = time.monotonic()
    result = dycoke(*args, input=feed, timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 100
    assert len(result.stdout.decode().splitlines()) == 2  # the first 400 words, then "Hi?"
    errors = [line for line in result.stderr.decode().split("you> ") if line.startswith("error:")]
    assert len(errors) == 3, result.stderr
    assert errors[0].startswith("error: this turn needs ") and "the model's context holds 1,024" in errors[0]
    assert "/reset to start the conversation over; ask again" in errors[0]
    assert errors[1].startswith("error: this turn needs ") and "context holds 1,024" in errors[1]
    assert errors[2] == (f"error: that line is 2,000,000 bytes, longer than the 1 MiB a question may hold; "
                         "ask again\n")


# 8. A profile of too many settings --------------------------------------------------------------------

def test_a_sweep_of_ten_thousand_values_is_refused_at_once(folder):
    values = ",".join(f"{(i + 1) / 10_002:.6f}" for i in range(10_000))
    started = time.monotonic()
    line = one_line(dycoke("profile", folder / "a.mp4", "--sweep", f"evs:rate={values}", *TINY, timeout=60))
    assert line == ("error: 10,001 settings to profile; at most 64 are compared in one run (shorten --sweep or the "
                    "--compress list)")
    assert time.monotonic() - started < 30
