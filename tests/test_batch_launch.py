"""`dycoke run` beyond one process: under torchrun (2 CPU processes, gloo) and as --shard jobs merged
afterwards, the answers are exactly those of one plain process.

Every run here uses one thread (torchrun's default, set for the others too) so float32 sums are
reduced in the same order in every process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_clip
from dycoke_cli.batch.answers import read_lines
from test_batch_kill import SAME, command

DYCOKE = Path(sys.executable).parent / "dycoke"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def env() -> dict:
    """The test's environment (its own DYCOKE_CACHE, set by conftest's fixtures), one thread per process."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("launch")
    for i, name in enumerate("abc"):
        write_clip(folder / f"{name}.mp4", frames=8 + 2 * i)
    rows = [json.dumps({"video": "abc"[i % 3] + ".mp4", "question": f"Question {i}?"}) for i in range(7)]
    rows.append(json.dumps({"video": "a.mp4", "question": "Which?", "options": ["x", "y"], "answer": "y",
                            "frames": 3}))
    rows.insert(3, "not json")
    path = folder / "q.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def single(questions) -> dict:
    """One plain process: the reference answers."""
    out = questions.with_name("single.jsonl")
    done = subprocess.run(command(questions, out), capture_output=True, text=True, env=env(), cwd=questions.parent)
    assert done.returncode == 1, done.stderr  # the malformed line
    return by_id(out)


def by_id(path: Path) -> dict:
    lines, bad = read_lines(path)
    assert bad == 0 and len({json.dumps(line["id"]) for line in lines}) == len(lines)
    return {line["id"]: {k: line.get(k) for k in SAME} for line in lines}


@pytest.mark.skipif(not (DYCOKE.exists() and TORCHRUN.exists()), reason="needs the dycoke and torchrun scripts")
def test_two_processes_under_torchrun_answer_as_one(questions, single):
    out = questions.with_name("torchrun.jsonl")
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "--no-python", str(DYCOKE),
           *command(questions, out)[3:], "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=questions.parent, timeout=300)
    assert done.returncode == 1, done.stderr  # a rank exited 1: the malformed line
    assert by_id(out) == single
    assert json.loads(done.stdout.strip().splitlines()[-1])["records"] == len(single)  # rank 0 alone reports
    assert not list(out.parent.glob("torchrun.rank-*"))  # merged into the output, then removed
    # Rank 0's progress counts only its share of the records (a plain closing line off a terminal).
    shown = re.search(r"rank 0/2: (\d+)/(\d+) done", done.stderr)
    assert shown and 0 < int(shown.group(2)) < len(single), done.stderr


def test_shards_merged_equal_one_run(questions, single):
    out = questions.with_name("sharded.jsonl")
    jobs = [subprocess.Popen(command(questions, out) + ["--shard", f"{i}/2"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env(), cwd=questions.parent) for i in range(2)]
    assert sorted(job.wait(timeout=300) for job in jobs) == [0, 1]  # the malformed line is in one shard
    shards = [out.with_name(f"sharded.shard-{i}-of-2.jsonl") for i in range(2)]
    assert all(len(by_id(shard)) for shard in shards)  # both did a part
    assert sum(len(by_id(shard)) for shard in shards) == len(single)
    merged = out.with_name("merged.jsonl")
    done = subprocess.run([sys.executable, "-m", "dycoke_cli", "merge", *map(str, shards), "-o", str(merged)],
                          capture_output=True, text=True, env=env(), cwd=questions.parent)
    assert done.returncode == 0, done.stderr
    assert by_id(merged) == single
