"""Hostile and careless inputs: nothing lost, nothing duplicated, nothing runs away, one line for every
mistake. One section per class of failure; batch cases check that every id is in the answers file
exactly once and that the file is valid JSONL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from clihelp import PEAK_KIB, TINY, dycoke as cli, held, lines_of, write_questions
from conftest import write_clip
from dycoke_cli.cli import app


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False, env=env)


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "Usage:" not in result.stderr
    return lines[0]


@pytest.fixture
def never_loaded(monkeypatch):
    """Fail the test if any command gets as far as loading weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("dycoke_cli.models.loading.load_model", refuse)
    monkeypatch.setattr("dycoke_cli.models.load_model", refuse, raising=False)


# 1. One writer per answers file -------------------------------------------------------------------

def test_two_runs_on_one_answers_file_never_duplicate(folder, tiny):
    """Started together, five times: one refuses at once (exit 2) or both run one after the other;
    either way every id is in the file exactly once and every line is whole."""
    questions = write_questions(folder, "together.jsonl", 3)
    for attempt in range(5):
        out = folder / f"together-{attempt}.jsonl"
        procs = [subprocess.Popen([sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(out), *TINY],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
        codes = [p.wait(timeout=300) for p in procs]
        errors = [p.stderr.read().decode() for p in procs]
        assert sorted(codes) in ([0, 0], [0, 2]), errors
        for code, err in zip(codes, errors):
            if code == 2:
                assert "is being written by another dycoke process" in err and len(err.strip().splitlines()) == 1
        ids = [line["id"] for line in lines_of(out)]
        assert sorted(ids) == sorted(f"q{i}" for i in range(3)), ids


def test_a_held_lock_refuses_at_once_and_a_dead_holders_lock_does_not(folder, never_loaded):
    questions = write_questions(folder, "locked.jsonl", 2)
    out = folder / "locked.answers.jsonl"
    with held(out) as holder:
        started = time.monotonic()
        line = one_line_error(invoke("run", questions, "-o", out, *TINY))
        assert f"pid {holder.pid}" in line and time.monotonic() - started < 30
        merged = one_line_error(invoke("merge", questions, "-o", out))
        assert "being written" in merged
    from dycoke_cli.outputs import exclusive

    with exclusive(out):  # the next writer gets in
        pass
    assert not (folder / ".locked.answers.jsonl.lock").exists()


# 2. Resource bounds ---------------------------------------------------------------------------------

def test_a_billion_frames_record_fails_fast_in_bounded_memory(folder, tmp_path):
    questions = tmp_path / "huge.jsonl"
    questions.write_text(json.dumps({"id": "huge", "video": str(folder / "a.mp4"), "question": "q?",
                                     "frames": 1_000_000_000}) + "\n")
    out = tmp_path / "huge.answers.jsonl"
    code = ("import sys\nfrom dycoke_cli.cli import app\n"
            f"try:\n    app(['run', {str(questions)!r}, '-o', {str(out)!r}, *{TINY!r}])\n"
            "except SystemExit as e:\n    code = e.code\n"
            f"print(code, {PEAK_KIB})\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    exit_code, rss_kib = result.stdout.split()
    assert int(exit_code) == 1 and time.monotonic() - started < 60
    assert int(rss_kib) < 1024 * 1024, f"peak RSS {int(rss_kib) / 1024:.0f} MiB"
    assert lines_of(out) == [{"id": "huge", "error": "line 1: 'frames' must be an integer from 1 to 10,000, "
                                                     "got 1000000000", "failure": "input"}]


def test_requests_beyond_the_models_context_fail_before_any_work(folder, tmp_path, never_loaded):
    long = write_clip(tmp_path / "long.mp4", frames=200, size=(32, 32))
    # random:tiny's context is 32,768 positions: 180 frames of 196 tokens (+ the newline) do not fit...
    line = one_line_error(invoke("ask", long, "q?", *TINY, "--frames", "180", "--compress", "none"))
    assert "the prompt needs" in line and "35,281 visual tokens from 180 frames" in line and "32,768" in line
    # ... 200 frames with DyCoke's default TTM would not either (50 windows of 196 + 3 * 58 = 370, + 1)...
    line = one_line_error(invoke("ask", long, "q?", *TINY, "--frames", "200", "--compress", "dycoke:k=0.1"))
    assert "visual tokens from 200 frames" in line
    line = one_line_error(invoke("ask", folder / "a.mp4", "x" * 100_000, *TINY))
    assert "text" in line and "32,768" in line
    assert "limit of 10,000 frames" in one_line_error(invoke("ask", long, "q?", *TINY, "--frames", "100000"))
    assert "limit of 10,000" in one_line_error(invoke("ask", long, "q?", *TINY, "--fps", "1000", "--frames", "1"))


# 3. One bad line never sinks a batch -----------------------------------------------------------------

def test_bom_bad_utf8_and_deep_nesting_are_single_failed_records(folder, tmp_path, tiny, monkeypatch):
    monkeypatch.setattr("dycoke_cli.commands.run.load", lambda *a, **k: tiny)
    good = {"video": str(folder / "a.mp4"), "question": "What happens?"}
    data = (b"\xef\xbb\xbf" + json.dumps({"id": "first", **good}).encode() + b"\n"
            + b'{"id": "broken", "video": "a.mp4", "question": "caf\xe9?"}\n'
            + b"[" * 100_000 + b"\n"
            + json.dumps({"id": "last", **good}).encode() + b"\n")
    questions = tmp_path / "hostile.jsonl"
    questions.write_bytes(data)
    out = tmp_path / "hostile.answers.jsonl"
    result = invoke("run", questions, "-o", out, *TINY)
    assert result.exit_code == 1
    by_id = {line["id"]: line for line in lines_of(out)}
    assert sorted(by_id) == ["broken", "first", "last", "line:3"]
    # the bad byte sits inside the question: the line's structure, and so its own id, survive
    assert by_id["broken"] == {"id": "broken", "error": "line 2: not valid UTF-8 (bad byte at column 52)",
                               "failure": "input"}
    assert by_id["line:3"] == {"id": "line:3", "error": "line 3: not usable JSON (nested too deeply)",
                               "failure": "input"}
    assert by_id["first"]["answer"] and by_id["last"]["answer"]
    assert "--retry-failed" not in result.stderr  # a retry cannot mend a line
    assert "2 record(s) cannot run as written" in result.stderr
    rerun = invoke("run", questions, "-o", out, *TINY)  # the bad lines are read again, and fail again
    assert rerun.exit_code == 1 and "--retry-failed" not in rerun.stderr
    assert sorted(line["id"] for line in lines_of(out)) == ["broken", "first", "last", "line:3"]


# 4. Output paths checked before the model loads ------------------------------------------------------

def test_unusable_output_paths_exit_2_before_loading(folder, tmp_path, never_loaded):
    questions = write_questions(folder, "paths.jsonl", 1)
    (tmp_path / "dir.jsonl").mkdir()
    assert "is a directory" in one_line_error(invoke("run", questions, "-o", tmp_path / "dir.jsonl", *TINY))
    (tmp_path / "file").write_text("")
    assert "is not a folder" in one_line_error(invoke("run", questions, "-o", tmp_path / "file" / "a.jsonl", *TINY))
    assert "is a directory" in one_line_error(invoke("profile", folder / "a.mp4", *TINY, "-o", tmp_path))
    assert "is a directory" in one_line_error(invoke("merge", questions, "-o", tmp_path))


# 5. One line for every usage error --------------------------------------------------------------------

@pytest.mark.parametrize("args, env, needle", [
    (["ask", "{clip}", "q?", "--frames", "0"], None, "--frames"),
    (["ask", "{clip}", "q?", "--fps", "nan"], None, "--fps"),
    (["ask", "{clip}", "q?", "--max-new-tokens", "-5"], None, "--max-new-tokens"),
    (["ask", "{clip}", "q?"], {"DYCOKE_FRAMES": "abc"}, "--frames"),
    (["profile", "{clip}", "--repeats", "0"], None, "--repeats"),
    (["ask", "-x.mp4", "q?"], None, "No such option: -x"),
    (["ask", "{clip}", "q?", "--no-such-flag"], None, "No such option"),
    (["ask", "{clip}"], None, "no question: none was given after the video and standard input was empty"),
    (["run"], None, "Missing argument"),
    (["frobnicate"], None, "No such command"),
    (["ask", "{clip}", "q?", "--quant", "3bit"], None, "--quant"),
])
def test_usage_errors_are_one_line(folder, never_loaded, args, env, needle):
    result = invoke(*[a.replace("{clip}", str(folder / "a.mp4")) for a in args], env=env)
    line = one_line_error(result)
    assert needle in line and "--help" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_files_are_one_line(folder, tmp_path, never_loaded):
    video = tmp_path / "locked.mp4"
    video.write_bytes((folder / "a.mp4").read_bytes())
    video.chmod(0)
    assert "permission denied" in one_line_error(invoke("ask", video, "q?", *TINY))
    questions = write_questions(tmp_path, "locked.jsonl", 1)
    questions.chmod(0)
    assert "cannot read questions" in one_line_error(invoke("run", questions, *TINY))


# 6. Questions -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_questions_are_refused(folder, question, never_loaded):
    assert "a question is empty" in one_line_error(invoke("ask", folder / "a.mp4", question, *TINY))


def test_undecodable_question_bytes_are_replaced_not_fatal(folder, tiny):
    result = subprocess.run([sys.executable, "-m", "dycoke_cli", "ask", str(folder / "a.mp4"), b"caf\xe9 \xff?",
                             *TINY, "--json"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["question"] == "caf\ufffd \ufffd?"


def test_a_binary_line_never_ends_a_chat(folder, tiny):
    result = cli("chat", folder / "a.mp4", *TINY, input=b"first?\n\xff\xfe\x00 bad\nlast?\n/bye\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode().strip().splitlines()) == 3  # three answers, one per question line


# 7. Model folders and settings checked against config.json ---------------------------------------------

def test_model_folders_that_cannot_load_exit_2(folder, tmp_path, never_loaded):
    pickle = tmp_path / "pickle"
    pickle.mkdir()
    (pickle / "config.json").write_text(json.dumps({"model_type": "llava_onevision"}))
    (pickle / "pytorch_model.bin").write_bytes(b"\x80\x04")
    assert "safetensors only" in one_line_error(invoke("ask", folder / "a.mp4", "q?", *TINY, "--model", pickle))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert "config.json of" in one_line_error(invoke("ask", folder / "a.mp4", "q?", *TINY, "--model", broken))
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(json.dumps({"model_type": "mine", "auto_map": {"AutoModel": "m.M"}}))
    (custom / "m.py").write_text("raise SystemExit('never run')\n")
    assert "no weights" in one_line_error(invoke("ask", folder / "a.mp4", "q?", *TINY, "--model", custom))


def test_settings_against_the_models_depth_fail_before_loading(folder, never_loaded):
    line = one_line_error(invoke("ask", folder / "a.mp4", "q?", *TINY, "--compress", "dycoke:layer=4"))
    assert "leaves no layer to prune in this 4-layer model" in line
    line = one_line_error(invoke("ask", folder / "a.mp4", "q?", *TINY, "--compress", "fastv:layer=7"))
    assert "fastv" in line
