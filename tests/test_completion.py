"""Shell completion as a user gets it: `dycoke --install-completion` typed in bash, in a real process (into a
private HOME), then bash itself sources the installed script and asks the completion function, which
runs `dycoke` the way a TAB does. It must offer the methods and their keys for `-c`, the built-in and
random-weight models for `-m`, and never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dycoke_cli.compress.registry import METHODS


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """(environment, HOME) with completion installed for bash and a `dycoke` on PATH that runs this
    checkout's package with this interpreter."""
    home = tmp_path_factory.mktemp("home")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dycoke"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m dycoke_cli \"$@\"\n")
    script.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SHELL": "/bin/bash"}
    # Typed in bash, as a user does: typer finds the shell among the process's parents and then takes
    # no shell name (run orphaned, as under nohup, it finds none); `; exit $?` keeps bash from exec'ing
    # the command in its own place.
    installed = subprocess.run(["bash", "-c", "dycoke --install-completion; exit $?"], env=env, capture_output=True,
                               text=True, timeout=60)
    assert installed.returncode == 0 and "Traceback" not in installed.stderr, installed.stderr
    return env, home


def complete(shell, words: list[str]) -> list[str]:
    """COMPREPLY of the installed bash function for the command line `words` (the last is being typed)."""
    env, home = shell
    line = " ".join(f"'{w}'" for w in words)
    program = (f"source {home}/.bash_completions/dycoke.sh\nCOMP_WORDS=({line})\nCOMP_CWORD={len(words) - 1}\n"
               "_dycoke_completion dycoke\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run(["bash", "--norc", "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_installed_bash_completion_completes_commands_methods_keys_and_models(shell):
    env, home = shell
    assert f"source '{home}/.bash_completions/dycoke.sh'" in (home / ".bashrc").read_text()
    assert complete(shell, ["dycoke", "a"]) == ["ask"]
    assert complete(shell, ["dycoke", "ask", "clip.mp4", "-c", ""]) == list(METHODS)
    assert complete(shell, ["dycoke", "ask", "clip.mp4", "--compress", "ev"]) == ["evs"]
    assert complete(shell, ["dycoke", "profile", "clip.mp4", "-c", "fastv:"]) == ["fastv:layer=", "fastv:rate="]
    assert complete(shell, ["dycoke", "ask", "clip.mp4", "-c", "evs:rate=0.5,score="]) == [
        "evs:rate=0.5,score=float32", "evs:rate=0.5,score=native"]
    assert complete(shell, ["dycoke", "ask", "clip.mp4", "-m", "built"]) == ["builtin:shapes"]
    assert complete(shell, ["dycoke", "run", "q.jsonl", "-m", "random:tiny"]) == [
        "random:tiny", "random:tiny-qwen2.5-vl", "random:tiny-qwen3-vl", "random:tiny-smolvlm2"]
    assert complete(shell, ["dycoke", "ask", "clip.mp4", "--max-n"]) == ["--max-new-tokens"]


def test_show_completion_prints_the_script_and_exits_0(shell):
    env, _ = shell
    result = subprocess.run(["bash", "-c", "dycoke --show-completion; exit $?"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert "_DYCOKE_COMPLETE=complete_bash" in result.stdout and result.stdout.rstrip().endswith(
        "complete -o default -F _dycoke_completion dycoke")


def test_the_installed_typer_is_within_the_declared_and_tested_range():
    """pyproject.toml declares the typer versions the suite ran on (typer >= 0.27 carries its own click, so
    there is no click to declare); the one installed must be among them."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    assert str(requirements["typer"].specifier) == "<0.30,>=0.27"
    assert "click" not in requirements
    assert version("typer") in requirements["typer"].specifier
