"""README.md's promises that code can check: the Python API snippet runs as written, and the test
command CI runs is the one README gives."""

from __future__ import annotations

import re
from pathlib import Path


README = (Path(__file__).parent.parent / "README.md").read_text()


def _block(after_heading: str, language: str) -> str:
    section = README[README.index(after_heading):]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block after {after_heading}"
    return match.group(1)


def test_python_api_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    """On a shapes clip (seed 90210, clip 0: a red square moving up, the flash in the last quarter) the
    snippet's two answers are right, DyCoke compressed, and the stats carry the first-token time."""
    from dycoke_cli import shapes

    frames, labels = shapes.clip(shapes.clip_rng(90210, 0))
    shapes.encode(frames, tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_block("## Python API", "python"), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" ", 2)[0] for line in printed] == [labels.answer("color"), labels.answer("describe")]
    assert labels.answer("describe") == "A red square moves up. The flash is in the last quarter."
    stats = namespace["stats"]
    assert (stats["visual_tokens_before"], stats["visual_tokens_after"]) == (128, 56)  # 2 anchors + 6 x 4
    assert stats["time_to_first_token_s"] >= stats["prefill_s"] > 0


def test_ci_runs_the_test_command_readme_gives():
    command = _block("Run the tests", "sh").strip()
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert command == "python -m pytest -q" and ci.rstrip().splitlines()[-1] == command


def test_the_first_command_makes_the_demo_where_the_next_examples_find_it(tmp_path):
    """README's first command, after the install steps: the clip lands in ./demo of the folder it runs in,
    and the answer is the one README promises; the examples' clip.mp4 and variables then work on it."""
    import os
    import subprocess
    import sys

    first = _block("Set up and answer", "sh").strip()
    steps = [step for step in first.split(" && ") if step.startswith("dycoke ")]
    assert steps[0].startswith("dycoke sample demo ") and steps[1].startswith("dycoke ask demo/clips/")
    assert "--index-url https://download.pytorch.org/whl/cpu" in first  # the CPU build of torch, named
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dycoke").write_text(f"#!/bin/sh\nexec {sys.executable} -m dycoke_cli \"$@\"\n")
    (bin_dir / "dycoke").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    work = tmp_path / "here"
    work.mkdir()
    result = subprocess.run(" && ".join(steps), shell=True, cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "A red square moves up. The flash is in the last quarter."
    assert (work / "demo" / "clips" / "s90210-00000.mp4").is_file()
    # the examples' clip.mp4, as README says to make it, with the variables it gives
    assert "cp demo/clips/s90210-00000.mp4 clip.mp4" in README
    (work / "clip.mp4").write_bytes((work / "demo" / "clips" / "s90210-00000.mp4").read_bytes())
    example = subprocess.run("dycoke ask clip.mp4 \"Describe the clip.\" -q", shell=True, cwd=work, capture_output=True,
                             text=True, timeout=300, env={**env, "DYCOKE_MODEL": "builtin:shapes", "DYCOKE_FRAMES": "8"})
    assert example.stdout == "A red square moves up. The flash is in the last quarter.\n", example.stderr


def test_the_manual_is_installed_and_shown_by_dycoke_man(tmp_path):
    """`dycoke --man` prints the page installed as package data (pyproject's package-data names it),
    byte for byte man/dycoke.1, when stdout is not a terminal."""
    import subprocess
    import sys
    from importlib.resources import files

    page = (Path(__file__).parent.parent / "man" / "dycoke.1").read_text()
    assert (files("dycoke_cli") / "man" / "dycoke.1").read_text() == page
    assert '"man/dycoke.1"' in (Path(__file__).parent.parent / "pyproject.toml").read_text()
    result = subprocess.run([sys.executable, "-m", "dycoke_cli", "--man"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == page
