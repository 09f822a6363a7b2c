"""One plan for every command: the same frames, the same checks, the same parameters, before any load.

Each command's frames are compared with `ask`'s and with the sampling contract worked out here by
hand. Settings errors must come before the weights load: loading ends these commands with a code of
its own, so a command that loads first shows that code instead of the setting's exit 2 and message.
"""

from __future__ import annotations

import json

import pytest

from conftest import write_clip
from dycoke_cli.compress.base import Budget
from dycoke_cli.compress.registry import METHODS
from dycoke_cli.errors import SettingsError

TINY = ["--device", "cpu", "--dtype", "float32", "--max-new-tokens", "2"]


def dycoke(*args, stdin: str | None = None):
    """The command in this process (these tests are about what each command plans, not its entry point)."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from dycoke_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], input=stdin)
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """16 frames at 8 fps: frame i at i/8 s, 2 s in all."""
    return write_clip(tmp_path_factory.mktemp("plan") / "clip.mp4", frames=16, size=(96, 64), rate=8)


def ask_timestamps(clip, model: str, *flags) -> list[float]:
    result = dycoke("ask", clip, "What happens?", "--model", model, *TINY, "--json", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["frame_timestamps"]


def run_timestamps(clip, tmp_path, model: str, *flags) -> list[float]:
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"id": 1, "video": str(clip), "question": "What happens?"}) + "\n")
    result = dycoke("run", source, "-o", tmp_path / "out.jsonl", "--model", model, *TINY, *flags)
    assert result.returncode == 0, result.stderr
    return json.loads((tmp_path / "out.jsonl").read_text())["frame_timestamps"]


def profile_timestamps(clip, model: str, *flags) -> list[list[float]]:
    result = dycoke("profile", clip, "--model", model, *TINY, "-n", "1", "-c", "none", "-c", "uniform:rate=0.5",
                    *flags)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    return [encoding["frame_timestamps"] for encoding in report["encodings"]]


@pytest.mark.parametrize("model, flags, expected", [
    # LLaVA-OneVision's 32 uniform frames over [0.5, 1.5): the 8 frames there, each once
    ("random:tiny", ["--start", "0.5", "--end", "1.5"], [0.5 + i / 8 for i in range(8)]),
    # Qwen's 2 fps over [0, 2) gives 4 targets (0.25, 0.75, 1.25, 1.75); --max-frames 2: 2 uniform ones
    ("random:tiny-qwen2.5-vl", ["--max-frames", "2"], [0.5, 1.5]),
    ("random:tiny-qwen2.5-vl", ["--start", "1", "--end", "2"], [1.25, 1.75]),
])
def test_every_command_samples_the_range_and_cap_as_ask_does(clip, tmp_path, model, flags, expected):
    assert ask_timestamps(clip, model, *flags) == expected
    assert run_timestamps(clip, tmp_path, model, *flags) == expected
    group = 2 if "qwen" in model else 1
    kept = min(len(expected), max(1, int(-(-len(expected) // group) * 0.5)) * group)  # uniform:rate=0.5's frames
    uniform = [expected[(2 * i + 1) * len(expected) // (2 * kept)] for i in range(kept)]
    # one encoding per distinct set of frames, each with its timestamps
    assert profile_timestamps(clip, model, *flags) == ([expected] if uniform == expected else [expected, uniform])


WEIGHTS_LOADED = 77


@pytest.fixture
def loads_nothing(monkeypatch):
    """Loading the weights ends the command with exit 77: a command that loads before it checks its
    settings shows 77 instead of the setting's exit 2 and message."""
    def refuse(*args, **kwargs):
        raise SystemExit(WEIGHTS_LOADED)

    monkeypatch.setattr("dycoke_cli.models.loading.load_model", refuse)


def command_with(command, clip, tmp_path, args):
    if command == "run":
        source = tmp_path / "q.jsonl"
        source.write_text(json.dumps({"id": 1, "video": str(clip), "question": "q?"}) + "\n")
        return dycoke("run", source, "-o", tmp_path / "out.jsonl", *args)
    if command == "ask":
        return dycoke("ask", clip, "q?", *args)
    if command == "chat":
        return dycoke("chat", clip, *args, stdin="q?\n")
    return dycoke("profile", clip, *args, "-c", "none")


COMMANDS = ["ask", "chat", "run", "profile"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("setting, message", [
    (["-c", "fastv:layer=99"], "fastv: layer=99 leaves no layer to prune in this 4-layer model; use 1 to 3"),
    (["-c", "dycoke:layer=4"], "dycoke: layer=4 leaves no layer to prune in this 4-layer model; use 1 to 3"),
    (["-c", "dycoke", "-b", "0.1"], "dycoke cannot keep fewer than 196 of 784 visual tokens (its anchor frames stay "
                                    "whole): --budget 0.1 asks for 78"),
    (["--max-new-tokens", "40000"], "the prompt needs"),
])
def test_settings_errors_exit_2_before_the_weights_load(clip, tmp_path, loads_nothing, command, setting, message):
    result = command_with(command, clip, tmp_path, ["--model", "random:tiny", "--device", "cpu", "--frames", "4",
                                                    *setting])
    if command == "run" and (setting[0] != "-c" or "-b" in setting):
        # what depends on each video (its frames against a budget or the context) is a failed record of
        # `run`, found when that video is planned: after the load (see the test below)
        assert result.returncode == WEIGHTS_LOADED
        return
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_valid_settings_reach_the_load(clip, tmp_path, loads_nothing, command):
    """The premise of the test above: with nothing wrong, each command does get to the weights."""
    result = command_with(command, clip, tmp_path, ["--model", "random:tiny", "--device", "cpu", "--frames", "4"])
    assert result.returncode == WEIGHTS_LOADED, result.stderr


def test_run_fails_the_records_whose_video_the_settings_cannot_take(clip, tmp_path):
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"id": 1, "video": str(clip), "question": "q?"}) + "\n")
    result = dycoke("run", source, "-o", tmp_path / "out.jsonl", "--model", "random:tiny", *TINY, "--frames", "4",
                    "-c", "dycoke", "-b", "0.1")
    assert result.returncode == 1
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {"id": 1, "error": (
        "line 1: dycoke cannot keep fewer than 196 of 784 visual tokens (its anchor frames stay whole): "
        "--budget 0.1 asks for 78"), "failure": "input"}


@pytest.mark.parametrize("budget", ["0.5", "0.25", "0.1", "1", "16", "1000000"])
@pytest.mark.parametrize("method", [m for m, cls in METHODS.items() if cls.budget_solves])
def test_effective_parameters_stay_in_their_declared_ranges(clip, method, budget):
    """What --json reports as a method's parameters is a valid spec for that method, at any budget."""
    spec = "earlytom:encoder_layer=1" if method == "earlytom" else method  # the tiny tower has 2 layers
    result = dycoke("ask", clip, "q?", "--model", "random:tiny", *TINY, "--frames", "8", "--json", "-c", spec,
                    "-b", budget)
    if result.returncode == 2:  # a budget the method cannot reach is refused with its smallest figure
        assert "cannot keep fewer than" in result.stderr and Budget.parse(budget).tokens(8 * 196) < 2 * 196
        return
    assert result.returncode == 0, result.stderr
    compression = json.loads(result.stdout)["compression"]
    cls = METHODS[method]
    assert set(compression["params"]) == {p.name for p in cls.params}  # nothing undeclared
    for name, value in compression["params"].items():
        try:
            cls.param(name).check(value, method)
        except SettingsError as exc:
            pytest.fail(f"{method} at --budget {budget} reports {name}={value}: {exc}")
    assert compression["budget"] == Budget.parse(budget).value
