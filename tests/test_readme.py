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
    command = _block("Run the tests:", "sh").strip()
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert command == "python -m pytest -q" and ci.rstrip().splitlines()[-1] == command
