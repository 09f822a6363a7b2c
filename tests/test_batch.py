"""`dycoke run` in process: JSONL parsing, multiple choice, grouping, resume, interrupts, summary, merge.

The model is the session's `tiny` (loading is patched to hand it over), so each run costs only its
questions; the crash and launcher tests run the real CLI as subprocesses (test_batch_kill/_launch).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_clip
from dycoke_cli.batch import answers as batch_io, choices, job as batch
from dycoke_cli.batch.records import Malformed, read_records
from dycoke_cli.batch.summary import summarize
from dycoke_cli.cli import app
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation
from dycoke_cli.video import SamplingRequest

FAST = ["--model", "random:tiny", "--frames", "2", "--max-new-tokens", "2"]
runner = CliRunner()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A folder with four short clips a.mp4 .. d.mp4."""
    folder = tmp_path_factory.mktemp("batch-videos")
    for i, name in enumerate("abcd"):
        write_clip(folder / f"{name}.mp4", frames=8 + 2 * i)
    return folder


@pytest.fixture
def tiny_loaded(tiny, monkeypatch):
    """`dycoke run` gets the session's tiny model instead of loading one."""
    loads = []
    monkeypatch.setattr("dycoke_cli.commands.run.load", lambda *a, **k: loads.append(a) or tiny)
    return loads


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


# Multiple choice -------------------------------------------------------------------------------

def test_multiple_choice_prompt_is_exact():
    assert choices.prompt("What is shown?", ["a cat", "a dog", "a bird"]) == (
        "What is shown?\nA. a cat\nB. a dog\nC. a bird\n"
        "Answer with the option's letter from the given choices directly."
    )


@pytest.mark.parametrize("answer, letter", [
    ("B", "B"), ("b", "B"), (" b ", "B"), ("(B)", "B"), ("B.", "B"), ("a dog", "B"), ("  A   DOG ", "B"),
    ("A dog.", "B"), ("cat", None), ("D", None), ("", None),
])
def test_expected_letter_from_a_letter_or_the_option_text(answer, letter):
    assert choices.expected_letter(answer, ["a cat", "a dog", "a bird"]) == letter


@pytest.mark.parametrize("generated, letter", [
    ("B", "B"), ("B.", "B"), ("(C) a bird", "C"), ("The answer is C.", "C"), ("Answer: A", "A"),
    ("b", "B"), (" c. ", "C"), ("a dog", "B"), ("A DOG", "B"), ("a cow", None), ("E", None),
    ("I think D, no, B", "B"), ("AB", None), ("", None),
])
def test_generated_answer_maps_to_a_letter(generated, letter):
    assert choices.chosen_letter(generated, ["a cat", "a dog", "a bird"]) == letter


def test_scoring_multiple_choice_and_open_answers():
    options = ["red", "green"]
    assert choices.is_correct("B", "B", options) and not choices.is_correct("A", "B", options)
    assert choices.is_correct(" Green. ", "B", options)
    assert choices.is_correct("A  Red Car.", "a red car", None)
    assert not choices.is_correct("a red car!", "a red car", None)


# Input records ---------------------------------------------------------------------------------

MALFORMED = [
    ("{not json", "line {n}: not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    ("[1, 2]", "line {n}: expected a JSON object, got list"),
    ({"question": "q?"}, "line {n}: missing field 'video'"),
    ({"video": "a.mp4"}, "line {n}: missing field 'question'"),
    ({"video": "a.mp4", "question": 7}, "line {n}: 'question' must be a non-empty string, got 7"),
    ({"video": "a.mp4", "question": "q?", "options": "A or B"},
     "line {n}: 'options' must be a list of 2 to 26 non-empty strings"),
    ({"video": "a.mp4", "question": "q?", "options": ["x", "y"], "answer": "C"},
     "line {n}: 'answer' 'C' is neither a letter A-B nor one of the options"),
    ({"video": "a.mp4", "question": "q?", "frames": "4"}, "line {n}: 'frames' must be an integer from 1 to 10,000, got \"4\""),
    ({"video": "a.mp4", "question": "q?", "max_new_tokens": 0},
     "line {n}: 'max_new_tokens' must be an integer from 1 to 1,000,000, got 0"),
    ({"video": "missing.mp4", "question": "q?"}, "line {n}: video not found: {folder}/missing.mp4"),
    ({"video": ".", "question": "q?"}, "line {n}: {folder} is a directory, not a video file"),
]


def test_each_malformed_line_is_reported_with_its_number_and_the_rest_runs(tmp_path, videos, tiny_loaded):
    good = {"id": "good", "video": "a.mp4", "question": "What happens?"}
    questions = jsonl(videos / "malformed.jsonl", [good] + [row for row, _ in MALFORMED] + [dict(good, id="last")])
    out = tmp_path / "out.jsonl"
    result = invoke("run", questions, "-o", out, *FAST)
    assert result.exit_code == 1
    lines = {line["id"]: line for line in answers(out)}
    assert lines["good"]["answer"] and lines["last"]["answer"]
    for n, (row, message) in enumerate(MALFORMED, start=2):
        expected = message.format(n=n, folder=videos)
        record_id = f"line:{n}" if isinstance(row, str) else n  # an object without "id": its line number
        assert lines[record_id] == {"id": record_id, "error": expected, "failure": "input"}
        assert f"error: {expected}" in result.stderr
    assert len(lines) == len(MALFORMED) + 2


def test_bad_id_types_and_duplicates(tmp_path, videos):
    rows = [{"id": [1], "video": "a.mp4", "question": "q?"}, {"id": True, "video": "a.mp4", "question": "q?"}]
    records = read_records(str(jsonl(videos / "ids.jsonl", rows)))
    assert records == [Malformed(1, "line:1", "line 1: 'id' must be a string or an integer"),
                       Malformed(2, "line:2", "line 2: 'id' must be a string or an integer")]
    # 3 and "3" are different ids; a second "x" is not.
    rows = [{"id": 3, "video": "a.mp4", "question": "q?"}, {"id": "3", "video": "a.mp4", "question": "q?"},
            {"id": "x", "video": "a.mp4", "question": "q?"}, {"id": "x", "video": "b.mp4", "question": "q?"}]
    result = invoke("run", jsonl(videos / "dup.jsonl", rows), "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 2
    assert result.stderr == 'error: line 4: id "x" is already used on line 3; ids must be unique\n'


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "error: cannot read questions file 'missing.jsonl': No such file or directory\n"),
    (["q.jsonl", "--shard", "2/2"], "error: --shard 2/2: expected i/N with 0 <= i < N, e.g. 0/4\n"),
    (["q.jsonl", "--shard", "x"], "error: --shard x: expected i/N with 0 <= i < N, e.g. 0/4\n"),
    (["-"], "error: reading questions from stdin needs --output\n"),
    (["q.jsonl", "-o", "q.jsonl"], "error: --output q.jsonl is the input file\n"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    jsonl(tmp_path / "q.jsonl", [{"video": "a.mp4", "question": "q?"}])
    result = invoke("run", *args)
    assert (result.exit_code, result.stderr) == (2, message)


def test_relative_videos_resolve_against_the_file_or_the_working_directory(tmp_path, videos, monkeypatch,
                                                                          tiny_loaded):
    monkeypatch.chdir(tmp_path)
    row = {"video": "a.mp4", "question": "q?"}
    result = invoke("run", jsonl(videos / "rel.jsonl", [row]), "-o", "rel.jsonl", *FAST)
    assert result.exit_code == 0 and answers(tmp_path / "rel.jsonl")[0]["video"] == "a.mp4"
    # From stdin, relative paths are relative to where dycoke runs.
    result = invoke("run", "-", "-o", "stdin.jsonl", *FAST, input=json.dumps(row) + "\n")
    assert answers(tmp_path / "stdin.jsonl") == [{"id": 1, "error": f"line 1: video not found: {tmp_path}/a.mp4",
                                                     "failure": "input"}]
    monkeypatch.chdir(videos)
    result = invoke("run", "-", "-o", tmp_path / "stdin2.jsonl", *FAST, input=json.dumps(row) + "\n")
    assert result.exit_code == 0 and "answer" in answers(tmp_path / "stdin2.jsonl")[0]


# Grouping and sharding ------------------------------------------------------------------------

def test_groups_follow_first_appearance_and_frames_overrides(videos):
    rows = [{"video": "a.mp4", "question": "1"}, {"video": "b.mp4", "question": "2"},
            {"video": "a.mp4", "question": "3", "frames": 2}, {"video": "a.mp4", "question": "4"},
            {"video": "a.mp4", "question": "5", "frames": 4}, "bad"]
    groups = batch.group_records(read_records(str(jsonl(videos / "g.jsonl", rows))), SamplingRequest(frames=4))
    assert [[r.line for r in g.records] for g in groups] == [[1, 4, 5], [2], [3], [6]]
    assert [g.sampling.frames if g.sampling else None for g in groups] == [4, 4, 2, None]


def test_share_splits_contiguously_and_covers_everything():
    items = list(range(10))
    parts = [batch.share(items, i, 4) for i in range(4)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert batch.share([1], 1, 2) == [] and batch.parse_shard("1/2") == (1, 2) and batch.parse_shard(None) == (0, 1)


def test_twenty_questions_over_four_videos_run_the_vision_tower_four_times(tiny, videos, monkeypatch):
    calls = []
    original = tiny.model.model.get_video_features
    monkeypatch.setattr(tiny.model.model, "get_video_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    rows = [{"video": f"{'abcd'[i % 4]}.mp4", "question": f"Question {i}?"} for i in range(20)]
    groups = batch.group_records(read_records(str(jsonl(videos / "twenty.jsonl", rows))), SamplingRequest(frames=2))
    lines = []
    batch.answer_groups(tiny, groups, parse_spec("dycoke"), Generation(max_new_tokens=1), lines.append)
    assert len(calls) == 4
    assert sorted(line["id"] for line in lines) == list(range(1, 21))
    reused = [line["prefix_reused_tokens"] > 0 for line in lines]
    assert reused == [False, True, True, True, True] * 4  # each video's follow-ups reuse its prefix


# Running, resume, interrupts -------------------------------------------------------------------

def test_output_lines_scoring_overrides_and_json_summary(tmp_path, videos, tiny_loaded):
    rows = [
        {"id": "mc", "video": "a.mp4", "question": "Which?", "options": ["x", "y", "z"], "answer": "c", "task": "t"},
        {"id": "open", "video": "b.mp4", "question": "Describe.", "frames": 3, "max_new_tokens": 1},
    ]
    out = tmp_path / "out.jsonl"
    result = invoke("run", jsonl(videos / "scoring.jsonl", rows), "-o", out, *FAST, "--json")
    assert result.exit_code == 0
    mc, open_ = answers(out)
    assert list(mc)[:10] == ["id", "video", "question", "options", "answer", "choice", "expected", "correct",
                             "task", "model"]
    assert mc["expected"] == "C" and mc["correct"] == (choices.chosen_letter(mc["answer"], ["x", "y", "z"]) == "C")
    assert "correct" not in open_ and "options" not in open_ and "task" not in open_
    assert (open_["frames"], open_["generated_tokens"], mc["frames"]) == (3, 1, 2)
    summary = json.loads(result.stdout)
    assert (summary["records"], summary["ok"], summary["failed"], summary["scored"]) == (2, 2, 0, 1)
    assert summary["tasks"]["t"]["scored"] == 1 and summary["output"] == str(out)
    assert summary["visual_tokens_before"] == (2 * 196 + 3 * 196) / 2


def test_rerun_skips_answered_and_retry_failed_retries_failures(tmp_path, videos, tiny_loaded):
    rows = [{"video": "a.mp4", "question": "q1?"}, {"video": "a.mp4", "question": "q2?"},
            {"video": "gone.mp4", "question": "q3?"}]
    questions, out = jsonl(tmp_path / "q.jsonl", rows), tmp_path / "out.jsonl"
    write_clip(tmp_path / "a.mp4")
    assert invoke("run", questions, "-o", out, *FAST).exit_code == 1
    first = out.read_text()
    result = invoke("run", questions, "-o", out, *FAST)
    # the missing video is read again (and still missing); nothing else to do: no load
    assert result.exit_code == 1 and out.read_text() == first and len(tiny_loaded) == 1
    assert "2 record(s) already in the output: skipped" in result.stderr and "--retry-failed" not in result.stderr
    # A crash left half a line: it is dropped and that record runs again.
    out.write_text(first.splitlines()[0] + "\n" + first.splitlines()[1][:25])
    assert invoke("run", questions, "-o", out, *FAST).exit_code == 1
    assert sorted(line["id"] for line in answers(out)) == [1, 2, 3]
    # The video appears: a plain rerun answers it, keeping every id once.
    write_clip(tmp_path / "gone.mp4")
    assert invoke("run", questions, "-o", out, *FAST).exit_code == 0
    lines = answers(out)
    assert sorted(line["id"] for line in lines) == [1, 2, 3] and not any("error" in line for line in lines)


def test_ctrl_c_writes_nothing_partial_exits_130_and_the_rerun_resumes(tmp_path, videos, tiny_loaded, monkeypatch):
    from dycoke_cli.engine import Session

    rows = [{"video": "a.mp4", "question": f"q{i}?"} for i in range(4)]
    questions, out = jsonl(videos / "ctrlc.jsonl", rows), tmp_path / "out.jsonl"
    original, asked = Session.ask, []

    def interrupted(self, *args, **kwargs):
        asked.append(1)
        if len(asked) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Session, "ask", interrupted)
    result = invoke("run", questions, "-o", out, *FAST)
    assert result.exit_code == 130 and result.stderr.endswith("error: interrupted\n")
    assert out.read_text().endswith("\n") and [line["id"] for line in answers(out)] == [1, 2]
    assert invoke("run", questions, "-o", out, *FAST).exit_code == 0
    assert [line["id"] for line in answers(out)] == [1, 2, 3, 4]


def test_out_of_memory_fails_one_record_frees_memory_and_continues(tmp_path, videos, tiny_loaded, monkeypatch):
    import torch

    from dycoke_cli.engine import Session

    original, freed = Session.ask, []

    def ask(self, question, *args, **kwargs):
        if question == "big?":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, question, *args, **kwargs)

    monkeypatch.setattr(Session, "ask", ask)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    rows = [{"video": "a.mp4", "question": q} for q in ("q1?", "big?", "q3?")]
    out = tmp_path / "out.jsonl"
    result = invoke("run", jsonl(videos / "oom.jsonl", rows), "-o", out, *FAST)
    assert result.exit_code == 1 and freed == [1]
    lines = answers(out)
    assert lines[1] == {"id": 2, "error": "line 2: out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"
                                          " (try fewer --frames, a --budget, or --quant 4bit)", "failure": "runtime"}
    assert "answer" in lines[0] and "answer" in lines[2]
    # The record after the failure answers exactly as it would have without it.
    monkeypatch.setattr(Session, "ask", original)
    clean = tmp_path / "clean.jsonl"
    invoke("run", jsonl(videos / "clean.jsonl", [rows[0], rows[2]]), "-o", clean, *FAST)
    assert [line["answer"] for line in answers(clean)] == [lines[0]["answer"], lines[2]["answer"]]


# Files, summary, merge ---------------------------------------------------------------------------

def test_answers_file_repairs_a_torn_tail_and_corrupt_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": 1, "answer": "x"}\n\x00\x00garbage\n{"id": 2, "answer": "y"}\n{"id": 3, "ans')
    assert batch_io.read_lines(path) == ([{"id": 1, "answer": "x"}, {"id": 2, "answer": "y"}], 2)
    kept, dropped = batch_io.repair(path)
    assert dropped == 2 and path.read_bytes() == b'{"id": 1, "answer": "x"}\n{"id": 2, "answer": "y"}\n'
    with batch_io.AnswerFile(path) as f:
        f.write({"id": 3, "answer": "z"})
    assert batch_io.read_lines(path) == (kept + [{"id": 3, "answer": "z"}], 0)
    assert not list(tmp_path.glob(".*tmp"))


def test_summary_figures():
    lines = [
        {"id": 1, "correct": True, "task": "a", "total_s": 1.0, "visual_tokens_before": 100, "visual_tokens_after": 50,
         "peak_rss_bytes": 10},
        {"id": 2, "correct": False, "task": "a", "total_s": 2.0, "visual_tokens_before": 100,
         "visual_tokens_after": 40, "peak_rss_bytes": 30},
        {"id": 3, "correct": True, "task": "b", "total_s": 3.0, "visual_tokens_before": 200,
         "visual_tokens_after": 60, "peak_rss_bytes": 20},
        {"id": 4, "total_s": 10.0, "visual_tokens_before": 200, "visual_tokens_after": 50, "peak_rss_bytes": 5},
        {"id": 5, "error": "line 5: boom"},
    ]
    s = summarize(lines)
    assert (s["records"], s["ok"], s["failed"], s["scored"], s["correct"]) == (5, 4, 1, 3, 2)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["tasks"] == {"a": {"scored": 2, "correct": 1, "accuracy": 0.5},
                          "b": {"scored": 1, "correct": 1, "accuracy": 1.0}}
    assert s["latency_s"] == {"mean": 4.0, "p50": 2.0, "p95": 10.0}
    assert (s["visual_tokens_before"], s["visual_tokens_after"], s["peak_rss_bytes"]) == (150, 50, 30)


def test_merge_keeps_each_id_once_preferring_answers(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", [{"id": 1, "answer": "x"}, {"id": "2", "error": "line 2: boom"}])
    b = jsonl(tmp_path / "b.jsonl", [{"id": "2", "answer": "y"}, {"id": 1, "answer": "other"},
                                     {"id": 2, "answer": "z"}])
    b.write_text(b.read_text() + '{"id": 9, "ans')
    out = tmp_path / "merged.jsonl"
    result = invoke("merge", a, b, "-o", out, "--json")
    assert result.exit_code == 0
    assert answers(out) == [{"id": 1, "answer": "x"}, {"id": "2", "answer": "y"}, {"id": 2, "answer": "z"}]
    assert json.loads(result.stdout)["records"] == 3
    assert f"{b}: skipped 1 incomplete or corrupt line(s)" in result.stderr
    result = invoke("merge", a, tmp_path / "nope.jsonl", "-o", out)
    assert (result.exit_code, result.stderr) == (2, f"error: answers file '{tmp_path / 'nope.jsonl'}' does not exist\n")


def test_merge_of_part_of_a_shard_set_is_refused_unless_partial(tmp_path):
    from typer.testing import CliRunner

    from dycoke_cli.cli import app

    shards = [tmp_path / f"answers.shard-{i}-of-2.jsonl" for i in range(2)]
    for i, path in enumerate(shards):
        path.write_text(json.dumps({"id": f"q{i}", "answer": "x"}) + "\n")
    out = tmp_path / "answers.jsonl"

    def merge(*args):
        return CliRunner().invoke(app, ["merge", *map(str, args), "-o", str(out)], catch_exceptions=False)

    refused = merge(shards[0])
    assert refused.exit_code == 2 and not out.exists()
    assert refused.stderr == (f"error: 1 of 2 shards of {tmp_path / 'answers'} given (missing: "
                              "answers.shard-1-of-2.jsonl); pass --partial to merge the shards given\n")
    partial = merge(shards[0], "--partial")
    assert partial.exit_code == 0 and partial.stderr.startswith(
        f"note: 1 of 2 shards of {tmp_path / 'answers'} given (missing: answers.shard-1-of-2.jsonl): merging the "
        "shards given (--partial)\n")
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q0"]
    whole = merge(*shards)
    assert whole.exit_code == 0 and not whole.stderr.startswith("note:")
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == ["q0", "q1"]


def test_runtime_failures_are_retried_with_retry_failed_and_kept_apart_from_input_ones(tmp_path, videos,
                                                                                      tiny_loaded, monkeypatch):
    from dycoke_cli.engine import Session

    rows = [{"id": "ok", "video": "a.mp4", "question": "q1?"}, {"id": "crash", "video": "a.mp4", "question": "q2?"},
            {"id": "nofield", "video": "a.mp4"}]
    questions, out = jsonl(tmp_path / "q.jsonl", rows), tmp_path / "out.jsonl"
    write_clip(tmp_path / "a.mp4")
    original = Session.ask

    def crash_once(self, question, *args, **kwargs):
        if question == "q2?":
            raise RuntimeError("worker crashed")
        return original(self, question, *args, **kwargs)

    monkeypatch.setattr(Session, "ask", crash_once)
    result = invoke("run", questions, "-o", out, *FAST, "--json")
    assert result.exit_code == 1
    by_id = {line["id"]: line for line in answers(out)}
    assert by_id["crash"] == {"id": "crash", "error": "line 2: RuntimeError: worker crashed", "failure": "runtime"}
    assert by_id["nofield"] == {"id": "nofield", "error": "line 3: missing field 'question'", "failure": "input"}
    summary = json.loads(result.stdout)
    assert (summary["failed"], summary["failed_input"], summary["failed_runtime"]) == (2, 1, 1)
    assert "1 record(s) failed while running; rerun with --retry-failed" in result.stderr
    assert "1 record(s) cannot run as written" in result.stderr
    monkeypatch.setattr(Session, "ask", original)
    assert invoke("run", questions, "-o", out, *FAST).exit_code == 1  # a plain rerun leaves the crash alone
    assert answers(out)[1]["id"] == "crash" and "error" in answers(out)[1]
    retried = invoke("run", questions, "-o", out, *FAST, "--retry-failed")
    assert retried.exit_code == 1 and "--retry-failed" not in retried.stderr  # only the input failure is left
    assert {line["id"]: "error" in line for line in answers(out)} == {"ok": False, "crash": False, "nofield": True}
