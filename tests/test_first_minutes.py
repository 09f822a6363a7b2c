"""What a new user meets in the first ten minutes, and the habits users of llm, ollama and mlx-vlm
bring: a clean stderr, chat interrupts, helpful exit codes, figures for where time goes, readable
help, completion, `dycoke models`, prompting flags and settings carried in the JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from dycoke_cli.cli import app

TINY = ["--model", "random:tiny", "--device", "cpu", "--dtype", "float32", "--frames", "4", "--max-new-tokens", "4"]


def invoke(*args, input=None, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env, catch_exceptions=False)


# 1. Library warnings stay off the terminal ------------------------------------------------------------

OURS = re.compile(r"^(dycoke stats|dycoke run|note: |Q\d+/\d+: |answering: \d+/\d+ done|[A-Za-z][A-Za-z ]+ {2,}\S| {4,}\S)")


def test_stderr_holds_only_our_lines(clip, tiny, tmp_path):
    """A real process, so every warning Python, transformers or bitsandbytes would print shows up."""
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": 1, "video": str(clip), "question": "What?"}) + "\n")
    for args in (["ask", clip, "What?", "And then?"], ["run", questions, "-o", tmp_path / "a.jsonl"]):
        result = subprocess.run([sys.executable, "-W", "default", "-m", "dycoke_cli", *map(str, args), *TINY],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        strangers = [line for line in result.stderr.splitlines() if line.strip() and not OURS.match(line)]
        assert strangers == [], strangers


# 2. Chat: Ctrl-C stops an answer or clears the line; /help; /bye --------------------------------------

def test_chat_interrupts_keep_the_session(tiny, clip, capsys):
    from dycoke_cli.commands.chat import run_chat
    from dycoke_cli.engine import Session, encode_video
    from dycoke_cli.render import write_text
    from dycoke_cli.settings import Generation
    from dycoke_cli.video import Sampling

    video = encode_video(tiny, clip, Sampling(frames=2))
    session = Session(tiny, video, "dycoke")
    four = Generation(max_new_tokens=4, min_new_tokens=4)
    state = {"streamed": 0}

    def interrupting_writer(text):  # Ctrl-C arrives while the first answer streams
        state["streamed"] += 1
        if state["streamed"] == 2:
            raise KeyboardInterrupt
        write_text(text)

    import dycoke_cli.render as render

    original = render.write_text
    render.write_text = interrupting_writer
    script = iter(["/help", "What happens?", KeyboardInterrupt, "What happens?", "/bye", "never"])

    def read(prompt):
        item = next(script)
        if item is KeyboardInterrupt:
            render.write_text = original
            raise KeyboardInterrupt
        return item

    try:
        run_chat(session, four, read=read)
    finally:
        render.write_text = original
    out, err = capsys.readouterr()
    assert "/reset" in err and "/bye" in err  # /help
    assert "answer stopped" in err
    assert session.history and len(session.history) == 1  # the stopped turn is forgotten
    fresh = Session(tiny, video, "dycoke").chat("What happens?", four).text
    assert session.history[0][1] == fresh
    assert out.endswith(fresh + "\n")


def test_chat_ends_on_end_of_input_with_a_newline(tiny, clip, capsys):
    from dycoke_cli.commands.chat import run_chat
    from dycoke_cli.engine import Session, encode_video
    from dycoke_cli.settings import Generation
    from dycoke_cli.video import Sampling

    session = Session(tiny, encode_video(tiny, clip, Sampling(frames=2)), "none")

    def eof(prompt):
        raise EOFError

    run_chat(session, Generation(max_new_tokens=2), read=eof)
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("\n")


# 4. Where time goes ---------------------------------------------------------------------------------

def test_run_progress_off_a_terminal_is_plain_lines_with_counts(monkeypatch, capsys):
    """A log file (Slurm, a pipe) gets "done/total, failed, rate, ETA" lines, never a drawn bar."""
    from dycoke_cli.render import batch

    monkeypatch.setattr(batch, "LOG_EVERY_S", 0.0)
    progress = batch.BatchProgress()
    with progress.running(total=3):
        progress.advance({"id": 1})
        progress.advance({"id": 2, "error": "record 2: no such video"})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("answering: 1/3 done, 0 failed, ") and ", ETA " in lines[0]
    assert lines[1:3] == ["error: record 2: no such video", lines[2]] and lines[2].startswith("answering: 2/3 done, 1 failed")
    assert lines[3].startswith("answering: 2/3 done, 1 failed")  # the closing count
    assert len(lines) == 4 and not any("━" in line for line in lines)


def test_json_reports_load_time_rates_and_reused_video_as_zero(clip, tiny):
    result = invoke("ask", clip, "first?", "second?", *TINY, "--json")
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["prefill_tokens_per_s"] > 0 and first["decode_tokens_per_s"] > 0
    assert second["load_s"] == 0.0  # the model is loaded once, reported once
    assert second["video_reused"] and all(second[k] == 0.0 for k in (
        "video_decode_s", "preprocess_s", "vision_encode_s", "compress_s"))
    assert first["vision_encode_s"] > 0
    assert first["time_to_first_token_s"] == pytest.approx(
        first["preprocess_s"] + first["vision_encode_s"] + first["compress_s"] + first["prefill_s"])
    assert second["time_to_first_token_s"] == second["prefill_s"]
    # the settings that produced the figures, enough to reproduce them
    assert first["compression"]["method"] == "dycoke" and first["compression"]["params"]["k"] == 0.7
    assert first["generation"]["max_new_tokens"] == 4 and first["sampling"]["frames"] == 4


# 5, 6. Help and completion --------------------------------------------------------------------------

def test_help_is_grouped_shows_choices_and_full_defaults():
    result = invoke("ask", "--help")
    text = result.stdout
    for panel in ("Model:", "Video sampling:", "Compression:", "Generation:", "Output:"):
        assert f"\n{panel}\n" in text, panel
    assert "auto|4bit|8bit|none" in text and "llava-hf/llava-onevision-qwen2-0.5b-ov-hf" in text
    assert "<bool>" not in text and "<str>" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "--install-completion" in invoke("--help").stdout


def test_every_value_flag_has_an_environment_variable():
    # Per-invocation paths and positions are left out on purpose: an inherited one would surprise.
    left_out = {"--output", "--shard", "--sweep", "--plot", "--json"}
    for name, command in typer.main.get_command(app).commands.items():
        if name == "sample":  # what to write this time: every option of it is per invocation
            continue
        for param in getattr(command, "params", []):
            if param.param_type_name != "option" or param.is_flag or set(param.opts) & (left_out | {"--help"}):
                continue
            assert param.envvar, f"{name} {param.opts}"


# 7. dycoke models -----------------------------------------------------------------------------------

def test_models_lists_families_and_specs_and_removes_a_built_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DYCOKE_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from dycoke_cli.models.random_specs import materialise, random_spec

    folder = materialise(random_spec("random:tiny"))
    listing = json.loads(invoke("models", "--json").stdout)
    assert "LLaVA-OneVision" in [f["family"] for f in listing["families"]]
    tiny = next(s for s in listing["specs"] if s["name"] == "random:tiny")
    assert tiny["built"] and tiny["bytes"] > 0 and listing["hub"] == []
    result = invoke("models", "rm", "random:tiny")
    assert result.exit_code == 0 and "removed random:tiny" in result.stderr and not folder.exists()
    assert invoke("models", "rm", "nobody/nothing").exit_code == 2


# 8. Prompting habits --------------------------------------------------------------------------------

def test_system_prompt_and_question_from_stdin(clip, tiny):
    plain = json.loads(invoke("ask", clip, "-", *TINY, "--json", input="What is it?\n").stdout)
    assert plain["question"] == "What is it?"
    system = json.loads(invoke("ask", clip, "What is it?", *TINY, "--json", "--system", "Be brief.").stdout)
    env = json.loads(invoke("ask", clip, "What is it?", *TINY, "--json", env={"DYCOKE_SYSTEM": "Be brief."}).stdout)
    assert system["prompt_tokens"] > plain["prompt_tokens"] and env["prompt_tokens"] == system["prompt_tokens"]
    assert system["generation"]["system"] == "Be brief."


# 10. Small ones -------------------------------------------------------------------------------------

def test_sample_clip_has_help():
    result = subprocess.run([sys.executable, "-m", "dycoke_cli.sample_clip", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_merge_summary_is_titled_merge(tmp_path):
    part = tmp_path / "part.jsonl"
    part.write_text(json.dumps({"id": 1, "answer": "x"}) + "\n")
    result = invoke("merge", part, "-o", tmp_path / "all.jsonl")
    assert result.exit_code == 0 and result.stderr.startswith("dycoke merge")
