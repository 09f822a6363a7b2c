"""The command line as a user meets it: streamed answer, --json, exit codes and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from dycoke_cli.cli import app

runner = CliRunner()
TINY = ["--model", "random:tiny", "--device", "cpu", "--dtype", "float32", "--frames", "4", "--max-new-tokens", "6"]


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_ask_streams_the_answer_of_the_engine(tiny, clip):
    from dycoke_cli.engine import Session, encode_video
    from dycoke_cli.compress.spec import parse_spec
    from dycoke_cli.settings import Generation
    from dycoke_cli.video import Sampling

    expected = Session(tiny, encode_video(tiny, clip, Sampling(frames=4)), parse_spec("dycoke")).ask(
        "What happens?", Generation(max_new_tokens=6)).text
    result = invoke("ask", str(clip), "What happens?", *TINY, "--quiet")
    assert result.exit_code == 0
    assert result.stdout == expected + "\n"


def test_ask_json_has_every_figure(clip):
    result = invoke("ask", str(clip), "What happens?", *TINY, "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["question"] == "What happens?" and record["video"] == str(clip)
    assert record["frames"] == 4 and len(record["frame_timestamps"]) == 4
    assert record["visual_tokens_before"] == 4 * 196
    assert record["visual_tokens_after"] == 196 + 58 * 3  # one window: anchor + 3 frames at K=0.7
    assert record["random_weights"] is True
    for key in ["answer", "prompt_tokens", "generated_tokens", "kv_entries_attended_mean", "video_decode_s",
                "preprocess_s", "vision_encode_s", "compress_s", "prefill_s", "time_to_first_token_s", "decode_s",
                "decode_tokens_per_s", "total_s", "peak_rss_bytes", "quantization", "device", "dtype"]:
        assert key in record, key
    assert record["kv_entries_attended_mean"] < record["kv_entries_full"]


def test_ask_several_questions_prints_one_json_object_each(clip):
    result = invoke("ask", str(clip), "first?", "second?", *TINY, "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["question"] for r in lines] == ["first?", "second?"]
    assert lines[0]["prefix_reused_tokens"] == 0 and lines[1]["prefix_reused_tokens"] > 0
    assert (lines[0]["video_reused"], lines[1]["video_reused"]) == (False, True)
    assert lines[0]["total_s"] > lines[0]["prefill_s"] + lines[0]["decode_s"]  # the first pays for the video


def test_no_compress_keeps_every_token(clip):
    record = json.loads(invoke("ask", str(clip), "q?", *TINY, "--json", "--no-compress").stdout)
    assert record["visual_tokens_after"] == record["visual_tokens_before"] == 784
    assert record["kv_entries_attended_mean"] == record["prompt_tokens"] + record["generated_tokens"] / 2


def test_stats_table_on_stderr(clip):
    result = invoke("ask", str(clip), "What happens?", *TINY, "-v")
    assert result.exit_code == 0
    for label in ["visual tokens  784 -> 370 (47.2% kept)", "first token", "tokens/s", "random weights",
                  "frame times", "compression    dycoke k=0.7 variant=clean p=0.7 layer=3 gate=reuse stage=prefill\n"]:
        assert label in result.stderr, label
    table = result.stderr[result.stderr.index("dycoke stats"):].splitlines()
    assert all(len(line) <= 80 and line == line.rstrip() for line in table), table


def test_a_long_stats_value_continues_under_itself(clip):
    """The encoder stage's settings make the compression row longer than 80 columns."""
    result = invoke("ask", str(clip), "q?", *TINY, "-c", "dycoke:stage=encoder,encoder_layer=1,k=0.5,p=0.6")
    table = result.stderr[result.stderr.index("dycoke stats"):]
    assert ("compression    dycoke k=0.5 variant=clean p=0.6 layer=3 gate=reuse stage=encoder\n"
            "               encoder_layer=1\n") in table
    assert all(len(line) <= 80 and line == line.rstrip() for line in table.splitlines())


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "unknown-model", "uncached-offline",
                                  "unknown-random", "bad-setting"])
def test_bad_input_is_one_line_and_exit_2(kind, tmp_path, clip):
    args = ["ask", str(clip), "q?", *TINY]
    if kind == "missing":
        args[1] = str(tmp_path / "nope.mp4")
    elif kind == "directory":
        args[1] = str(tmp_path)
    elif kind == "text":
        (tmp_path / "notes.mp4").write_text("not a video at all\n")
        args[1] = str(tmp_path / "notes.mp4")
    elif kind == "unknown-model":
        args += ["--model", "no such model"]
    elif kind == "uncached-offline":
        args += ["--model", "someone/not-downloaded", "--offline"]
    elif kind == "unknown-random":
        args += ["--model", "random:huge"]
    elif kind == "bad-setting":
        args += ["--compress", "dycoke:k=1.5"]
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    expected = {"directory": "is a folder with no video in it", "text": "is not a video FFmpeg can read",
                "unknown-model": "unknown model 'no such model'",
                "unknown-random": "unknown random model 'random:huge'",
                "bad-setting": "k must be in [0, 1), got 1.5", "uncached-offline": "not in the local cache"}
    assert kind not in expected or expected[kind] in lines[0], lines[0]
    assert "Traceback" not in result.output
    if kind == "uncached-offline":
        assert "someone/not-downloaded" in lines[0] and "--model /path/to/folder" in lines[0]
    if kind == "missing":
        assert lines[0] == f"error: video not found: {tmp_path / 'nope.mp4'}"


def test_help_does_not_import_torch():
    code = ("import sys\nfrom dycoke_cli.cli import main\nsys.argv = ['dycoke', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ask" in result.stdout


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "dycoke_cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("dycoke ")


def test_man_page_documents_every_option():
    man = (Path(__file__).parent.parent / "man" / "dycoke.1").read_text()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert re.search(rf"^\.SS {name}$", man, re.M), f"no section for {name}"
        for param in command.params:
            for flag in param.opts:
                if flag.startswith("-") and flag != "--help":
                    assert flag.replace("-", r"\-") in man, f"{name} {flag}"


def test_man_page_methods_section_is_the_declarations():
    """The METHODS section is generated from each method's declaration; a method or key added without
    regenerating it fails here (regenerate with dycoke_cli.commands.methods.troff)."""
    from dycoke_cli.commands.methods import troff
    from dycoke_cli.compress.registry import METHODS

    man = (Path(__file__).parent.parent / "man" / "dycoke.1").read_text()
    section = re.search(r'^\.\\" BEGIN METHODS[^\n]*\n(.*?)^\.\\" END METHODS$', man, re.M | re.S)
    assert section is not None
    assert section.group(1) == troff()
    for name, cls in METHODS.items():
        assert f".B {name}\n" in section.group(1)
        for p in cls.params:
            assert f".BR {p.name} " in section.group(1)
