"""`dycoke sample` (class 10): the clip maker as a subcommand with the one-line errors of every other
command, and its old name `python -m dycoke_cli.shapes make`. Real subprocesses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clihelp import dycoke, one_line
from dycoke_cli import shapes


def test_sample_writes_what_the_generator_makes(tmp_path):
    result = dycoke("sample", tmp_path / "cli", "--clips", 2, "--seed", 7, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{tmp_path / 'cli' / 'questions.jsonl'}\n"
    reference = shapes.make(tmp_path / "library", clips=2, seed=7)
    assert (tmp_path / "cli" / "questions.jsonl").read_bytes() == reference.read_bytes()
    for name in ("s7-00000.mp4", "s7-00001.mp4"):
        assert (tmp_path / "cli" / "clips" / name).read_bytes() == (tmp_path / "library" / "clips" / name).read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--crf", "99"], "error: Invalid value for '--crf': Input should be less than or equal to 18 "
                      "(see dycoke sample --help)"),
    (["--seed", "-1"], "error: Invalid value for '--seed': Input should be greater than or equal to 0 "
                       "(see dycoke sample --help)"),
    (["--clips", "0"], "error: Invalid value for '--clips' / '-n': Input should be greater than or equal to 1 "
                       "(see dycoke sample --help)"),
    (["--clips", "1000000"], "error: Invalid value for '--clips' / '-n': Input should be less than or equal to "
                             "100000 (see dycoke sample --help)"),
    (["--clips", "two"], "error: Invalid value for '--clips' / '-n': Input should be a valid integer, unable to "
                         "parse string as an integer (see dycoke sample --help)"),
])
def test_bad_values_are_one_line(tmp_path, args, message):
    assert one_line(dycoke("sample", tmp_path / "out", *args, timeout=60)) == message
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_or_under_one_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine\n")
    assert one_line(dycoke("sample", target, timeout=60)) == (
        f"error: {target} is a file, not a folder; give a folder to write the clips into")
    assert one_line(dycoke("sample", target / "sub", timeout=60)) == (
        f"error: cannot create {target / 'sub' / 'clips'}: Not a directory")
    assert target.read_text() == "mine\n"


def test_the_old_name_is_the_same_command(tmp_path):
    old = subprocess.run([sys.executable, "-m", "dycoke_cli.shapes", "make", tmp_path / "old", "--clips", "1",
                          "--seed", "3"], capture_output=True, timeout=120)
    assert old.returncode == 0, old.stderr
    assert (tmp_path / "old" / "questions.jsonl").read_bytes() == shapes.make(tmp_path / "ref", 1, 3).read_bytes()
    bad = subprocess.run([sys.executable, "-m", "dycoke_cli.shapes", "make", tmp_path / "x", "--crf", "99"],
                         capture_output=True, timeout=60)
    assert one_line(bad).startswith("error: Invalid value for '--crf'")
