"""Habits users bring from llm, ollama, hf and mlx-vlm: `-h`, usage lines without Python types, a
question piped in, `-q` that is quiet, a table on a terminal, several videos at once, a URL named as
such. Real processes (and a pseudo-terminal where "on a terminal" matters) for what lives outside the
CLI runner."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from clihelp import TINY, dycoke, one_line
from dycoke_cli.cli import app


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def commands() -> list[list[str]]:
    """Every command path: ask, chat, ..., models, models pull, models rm."""
    out = []
    for name, command in typer.main.get_command(app).commands.items():
        out.append([name])
        out += [[name, sub] for sub in getattr(command, "commands", {})]
    return out


def on_terminal(args: list, stdin_terminal: bool = True, timeout: float = 60) -> tuple[int, str]:
    """Run `dycoke ARGS` with stdout (and stdin) on a pseudo-terminal; (exit code, what the terminal showed)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "LINES": "50"}
    proc = subprocess.Popen([sys.executable, "-m", "dycoke_cli", *map(str, args)], stdout=follower, stderr=follower,
                            stdin=follower if stdin_terminal else subprocess.DEVNULL, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    shown = b"".join(chunks).decode().replace("\r\n", "\n")
    return proc.wait(timeout=timeout), re.sub(r"\x1b\[[0-9;]*m", "", shown)  # colours off: the text is compared


def test_dash_h_is_help_everywhere_in_a_real_process():
    for args in (["-h"], ["ask", "-h"], ["models", "pull", "-h"]):
        result = dycoke(*args, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith(b"Usage: dycoke"), (args, result.stderr)
    for path in commands():
        assert invoke(*path, "-h").stdout == invoke(*path, "--help").stdout, path


def test_usage_lines_and_arguments_have_no_python_types():
    usages = {" ".join(path): invoke(*path, "--help").stdout.splitlines()[0] for path in commands()}
    assert usages["ask"] == "Usage: dycoke ask [OPTIONS] VIDEO [QUESTION...]"
    assert usages["merge"] == "Usage: dycoke merge [OPTIONS] ANSWERS.jsonl..."
    assert usages["profile"] == "Usage: dycoke profile [OPTIONS] VIDEO [QUESTION]"
    assert usages["models rm"] == "Usage: dycoke models rm [OPTIONS] [NAME]"
    for path in commands():
        text = invoke(*path, "--help").stdout
        for python in ("<list", "<str>", "<path>", "<int>", "<float>", "{"):
            assert python not in text, (path, python)


def test_fps_help_states_the_range_it_accepts(clip):
    text = " ".join(invoke("ask", "--help").stdout.split())
    fps = text[text.index("--fps FPS"):text.index("--max-frames N")]
    assert fps == "--fps FPS Sample at this rate instead of --frames (more than 0, at most 1000). [env var: DYCOKE_FPS] "
    for value in ("0", "-1", "nan", "1001"):
        line = one_line(dycoke("ask", clip, "q?", "--fps", value, timeout=60))
        assert line.endswith(f"{value} is not a frame rate: give more than 0, at most 1000 (see dycoke ask --help)")


def test_methods_on_a_terminal_is_a_table_that_fits_80_columns():
    from dycoke_cli.commands.methods import table

    code, shown = on_terminal(["methods"])
    lines = shown.rstrip("\n").split("\n")
    assert code == 0 and lines == table(80)
    assert max(map(len, lines)) <= 80 and lines[1].startswith("dycoke: DyCoke")
    piped = dycoke("methods", timeout=60).stdout.decode().splitlines()  # a pipe keeps one line per key
    assert piped[2] == "  k=0.7  [0, 1): TTM pruning rate of a pruned frame (0 turns TTM off)"


def test_a_question_piped_in_and_quiet_means_quiet(clip, tiny):
    piped = dycoke("ask", clip, *TINY, "--json", input=b"What is it?\n", timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["question"] == "What is it?"
    # --device auto without a GPU says so, unless -q
    loud = dycoke("ask", clip, "What?", *TINY, "--device", "auto", timeout=120)
    quiet = dycoke("ask", clip, "What?", *TINY, "--device", "auto", "-q", timeout=120)
    assert b"note: no CUDA GPU found" in loud.stderr
    assert quiet.returncode == 0 and quiet.stderr == b"" and quiet.stdout == loud.stdout  # the answer alone


def test_no_question_on_a_terminal_is_a_usage_error_and_empty_stdin_says_so(clip):
    code, shown = on_terminal(["ask", clip])
    assert code == 2 and shown.strip() == ("error: no question: give one after the video, or pipe one in "
                                           "(echo \"What happens?\" | dycoke ask VIDEO; see dycoke ask --help)")
    empty = dycoke("ask", clip, stdin=subprocess.DEVNULL, timeout=60)
    assert one_line(empty) == ("error: no question: none was given after the video and standard input was empty "
                               "(see dycoke ask --help)")


def test_a_url_is_named_as_such(clip):
    for command in (["ask", "https://example.com/v.mp4", "q?"], ["chat", "https://example.com/v.mp4"],
                    ["profile", "https://example.com/v.mp4"]):
        result = invoke(*command, *TINY)
        assert result.exit_code == 2
        assert result.stderr == ("error: URLs are not supported (https://example.com/v.mp4): dycoke reads local "
                                 "files only; download the video first (e.g. curl -L -o clip.mp4 URL) and pass the "
                                 "file\n")


@pytest.mark.parametrize("form", ["folder", "pattern", "shell"])
def test_a_folder_or_glob_answers_every_video_once_each(folder, tiny, form):
    given = {"folder": [folder], "pattern": [f"{folder}/*.mp4"], "shell": [folder / "a.mp4", folder / "b.mp4"]}[form]
    result = invoke("ask", *given, "first?", "second?", *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["video"], line["question"]) for line in lines] == [
        (str(folder / name), q) for name in ("a.mp4", "b.mp4") for q in ("first?", "second?")]
    # one encoding per video, the model loaded once, the second question reusing each video's prefix
    assert [line["video_reused"] for line in lines] == [False, True, False, True]
    assert [line["load_s"] > 0 for line in lines] == [True, False, False, False]
    assert [line["prefix_reused_tokens"] > 0 for line in lines] == [False, True, False, True]


def test_a_folder_without_videos_and_a_pattern_without_matches_are_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert invoke("ask", tmp_path, "q?", *TINY).stderr.startswith(f"error: {tmp_path} is a folder with no video in it")
    assert invoke("ask", f"{tmp_path}/*.mp4", "q?", *TINY).stderr == f"error: no file matches {tmp_path}/*.mp4\n"


def test_profile_on_a_terminal_shows_the_table_without_the_json(clip, tiny, tmp_path):
    args = ["profile", clip, "q?", *TINY, "-c", "none", "-c", "dycoke", "--repeats", "1"]
    code, shown = on_terminal(args)
    assert code == 0, shown
    assert "dycoke profile: random:tiny" in shown and '"schema"' not in shown
    assert shown.rstrip().endswith("note: the JSON report goes to stdout when it is not a terminal, or with --json "
                                   "or --output FILE")
    code, shown = on_terminal([*args, "--json"])
    assert code == 0 and json.loads(shown.rstrip().splitlines()[-1])["schema"] == "dycoke.profile/2"
    piped = dycoke(*args, timeout=300)  # a pipe gets the report as the last line, as before
    assert piped.returncode == 0 and json.loads(piped.stdout.splitlines()[-1])["schema"] == "dycoke.profile/2"


def test_every_budget_help_states_the_grammar_and_both_directions():
    for path in commands():
        command = typer.main.get_command(app)
        for part in path:
            command = command.commands[part]
        for param in command.params:
            if "--budget" in getattr(param, "opts", []):
                text = " ".join(param.help.split())
                assert "KEPT" in text and "rate= is the share DROPPED" in text, path
                assert "a share with a decimal point or % (0.25, 25%; 1.0 keeps all)" in text, path
                assert "a whole number of tokens (300; above the video's, all are kept)" in text, path


def test_run_given_a_folder_points_at_ask(folder):
    result = invoke("run", folder, *TINY)
    assert result.exit_code == 2 and result.stderr == (f"error: '{folder}' is a folder, and run reads a JSONL file of "
                                                       f"questions; to ask about every video in it: dycoke ask {folder} "
                                                       "QUESTION\n")
