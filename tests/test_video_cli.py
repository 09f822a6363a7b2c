"""Every bad video through the command line: its documented one-line error and exit code 2, before
any model is loaded; a truncated file is answered from the frames that decoded, with a warning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import videogen
from typer.testing import CliRunner

from dycoke_cli.cli import app

runner = CliRunner()
# A model that cannot load: if a bad video were not caught first, the error would be about the model.
NEVER_LOADED = ["--model", "random:does-not-exist"]


def _folder(path):
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-cli")
    good = videogen.make_video(root / "good.mp4", n=24)
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    (root / "notes.mp4").write_text("not a video\n" * 40)
    (root / "codec.mp4").write_bytes(good.read_bytes().replace(b"avc1", b"zzz9"))
    long = videogen.make_video(root / "long.mkv", n=48)
    data = long.read_bytes()
    (root / "cut.mkv").write_bytes(data[: len(data) // 2])
    return {
        "missing": (root / "nope.mp4", r"video not found: .*nope\.mp4"),
        "directory": (_folder(root / "nothing"), r"nothing is a folder with no video in it"),
        "empty": (root / "empty.mp4", r"empty\.mp4 is empty \(0 bytes\)"),
        "random": (root / "random.mp4", r"random\.mp4 is not a video FFmpeg can read"),
        "text": (root / "notes.mp4", r"notes\.mp4 is not a video FFmpeg can read"),
        "image": (videogen.make_png(root / "photo.mp4"), r"photo\.mp4 is a still image \(png\), not a video"),
        "audio": (videogen.make_audio_only(root / "song.mp4"), r"song\.mp4 has no video stream \(audio only\)"),
        "zero": (videogen.make_empty_video_track(root / "zero.mkv"), r"zero\.mkv has a video stream but no frames"),
        "codec": (root / "codec.mp4", r"codec\.mp4: its video codec is not supported"),
        "range": (good, r"--start 5 s is past the end of .*good\.mp4"),
        "good": (good, None),
        "cut": (root / "cut.mkv", None),
    }


BAD = ["missing", "directory", "empty", "random", "text", "image", "audio", "zero", "codec", "range"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_video_is_one_line_exit_2(files, kind):
    import re

    path, pattern = files[kind]
    extra = ["--start", "5"] if kind == "range" else []
    result = runner.invoke(app, ["ask", str(path), "q?", *NEVER_LOADED, *extra])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("flag, value, message", [
    ("--start", "1:60", "cannot read time '1:60'"),
    ("--end", "abc", "cannot read time 'abc'"),
])
def test_bad_time_is_one_line_exit_2(files, flag, value, message):
    result = runner.invoke(app, ["ask", str(files["good"][0]), "q?", *NEVER_LOADED, flag, value])
    assert result.exit_code == 2 and message in result.stderr


def test_truncated_file_is_answered_with_a_warning(files):
    result = runner.invoke(app, ["ask", str(files["cut"][0]), "q?", "--model", "random:tiny", "--device", "cpu",
                                 "--frames", "8", "--max-new-tokens", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["warnings"] and "ends early" in record["warnings"][0]
    assert 1 <= record["frames"] <= 8
    assert all(t <= 1.0 for t in record["frame_timestamps"])  # only the half that survived
