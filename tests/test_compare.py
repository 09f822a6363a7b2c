"""`dycoke run` with several --compress settings: per setting exactly the answers of a run of that
setting alone, one encoding per video and distinct frames, the comparison's figures recomputed here
from the answers files, and the report's table and plot.

The model is the session's `tiny` (loading is patched to hand it over); the crash test runs the real
CLI as subprocesses (test_compare_kill.py).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_clip
from dycoke_cli.batch.summary import summarize, wilson
from dycoke_cli.cli import app

# The video cache off: these tests count encodes per group, which a cache hit from an earlier run would hide.
FAST = ["--model", "random:tiny", "--frames", "2", "--max-new-tokens", "3", "--no-cache"]
SETTINGS = ["none", "dycoke", "evs:budget=0.5", "uniform:budget=0.5", "fastv:rate=0.5"]
FILES = ["none", "dycoke", "evs_budget=0.5", "uniform_budget=0.5", "fastv_rate=0.5"]
TIMING = ("load_s", "peak_rss_bytes", "peak_gpu_allocated_bytes", "peak_gpu_reserved_bytes")


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(line: dict) -> dict:
    """Everything but what a clock or the process decides (timings, memory, the load time)."""
    return {k: v for k, v in line.items() if not (k.endswith("_s") or k in TIMING)}


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    """Two videos, multiple-choice and open questions with tasks, a per-record override, a record with
    its own frames, a missing video and a malformed line."""
    folder = tmp_path_factory.mktemp("compare")
    write_clip(folder / "a.mp4", frames=10)
    write_clip(folder / "b.mp4", frames=12)
    rows = []
    for i in range(8):
        row = {"id": f"q{i}", "video": "ab"[i % 2] + ".mp4", "question": f"Question {i}?", "task": f"t{i % 3}"}
        if i % 2 == 0:
            row.update(options=["red", "green", "blue"], answer="ABC"[i % 3])
        rows.append(json.dumps(row))
    rows.append(json.dumps({"id": "own", "video": "a.mp4", "question": "Own?", "compress": "random:budget=0.3"}))
    rows.append(json.dumps({"id": "three", "video": "b.mp4", "question": "Three?", "frames": 3, "answer": "x"}))
    rows.append(json.dumps({"id": "gone", "video": "gone.mp4", "question": "Where?"}))
    rows.insert(4, '{"id": "broken", "video": ')
    path = folder / "q.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def multi_args(out: Path) -> list:
    return ["-o", out, *FAST, *[a for spec in SETTINGS for a in ("-c", spec)]]


def test_each_setting_answers_exactly_as_a_run_of_it_alone(questions, tmp_path, tiny, tiny_loaded, monkeypatch):
    calls = []
    original = tiny.model.model.get_video_features
    monkeypatch.setattr(tiny.model.model, "get_video_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    result = invoke("run", questions, *multi_args(tmp_path / "all.jsonl"))
    assert result.exit_code == 1, result.stderr  # the malformed line and the missing video
    # Groups: a, b, b at 3 frames (uniform's own frames beside the shared ones: 2 encodings each), and
    # the record with its own compress (random under every setting: 1 encoding).
    assert len(calls) == 2 + 2 + 2 + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"all.{f}.jsonl" for f in FILES)

    calls.clear()
    for spec, tag in zip(SETTINGS, FILES):
        alone = tmp_path / f"alone.{tag}.jsonl"
        assert invoke("run", questions, "-o", alone, *FAST, "-c", spec).exit_code == 1
        multi = lines_of(tmp_path / f"all.{tag}.jsonl")
        assert [comparable(line) for line in multi] == [comparable(line) for line in lines_of(alone)], spec
        assert len(multi) == 12 and sum("error" in line for line in multi) == 2
        assert [line["compression"]["method"] for line in multi if line["id"] == "own"] == ["random"]
    assert len(calls) == 4 + 4 + 4 + 4 + 4  # a run alone encodes each of its 4 groups once
    assert len(tiny_loaded) == 1 + len(SETTINGS)


def test_encoder_stage_settings_get_their_own_encodings_and_their_single_run_answers(questions, tmp_path, tiny_loaded,
                                                                                    monkeypatch):
    """A selection inside the vision tower changes the encoding: each such setting encodes the video itself,
    while the settings that select after the tower share one encoding."""
    from dycoke_cli import engine
    from dycoke_cli.outputs import file_tag

    settings = ["none", "evs:budget=0.5", "evs:stage=encoder,encoder_layer=1,budget=0.5",
                "earlytom:encoder_layer=1,budget=0.5"]
    encodes = []
    original = engine.encode
    monkeypatch.setattr(engine, "encode", lambda lm, plan, *rest: encodes.append(plan.method.name) or
                        original(lm, plan, *rest))
    out = tmp_path / "enc.jsonl"
    result = invoke("run", questions, "-o", out, *FAST, *[a for spec in settings for a in ("-c", spec)], "--json")
    assert result.exit_code == 1, result.stderr
    labels = [s["label"] for s in json.loads(result.stdout)["settings"]]
    # Per group a, b and b at 3 frames: one encoding for none and evs, one each for the tower selections;
    # the record with its own compress (random under every setting): one.
    assert sorted(encodes) == sorted(["none", "evs", "earlytom"] * 3 + ["random"])
    for label in labels:
        encodes.clear()
        alone = tmp_path / f"alone.{file_tag(label)}.jsonl"
        assert invoke("run", questions, "-o", alone, *FAST, "-c", label).exit_code == 1
        assert len(encodes) == 4
        together = lines_of(out.with_name(f"enc.{file_tag(label)}.jsonl"))
        assert [comparable(line) for line in together] == [comparable(line) for line in lines_of(alone)], label
        assert len(together) == 12 and sum("error" in line for line in together) == 2
    encoder = lines_of(out.with_name(f"enc.{file_tag(labels[2])}.jsonl"))
    assert {line.get("encoder_layer") for line in encoder if line.get("id") == "q0"} == {1}


def test_the_comparison_equals_figures_computed_from_the_answers_files(questions, tmp_path, tiny_loaded):
    out = tmp_path / "cmp.jsonl"
    result = invoke("run", questions, *multi_args(out), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["schema"] == "dycoke.compare/1" and report["baseline"] == "none"
    assert [s["label"] for s in report["settings"]] == SETTINGS
    files = [lines_of(out.with_name(f"cmp.{tag}.jsonl")) for tag in FILES]
    first = {line["id"]: line["answer"] for line in files[0] if "answer" in line}
    for s, lines in zip(report["settings"], files):
        ok = [line for line in lines if "error" not in line]
        scored = [line for line in ok if "correct" in line]
        correct = sum(line["correct"] for line in scored)
        assert (s["records"], s["ok"], s["failed"]) == (12, 10, 2)
        assert (s["scored"], s["correct"]) == (len(scored), correct) and s["scored"] == 5
        assert s["accuracy"] == pytest.approx(correct / len(scored))
        assert s["interval_95"] == pytest.approx(wilson_by_hand(correct, len(scored)))
        for task in ("t0", "t1", "t2"):
            mine = [line for line in scored if line.get("task") == task]
            right = sum(line["correct"] for line in mine)
            assert s["tasks"][task]["scored"] == len(mine) and s["tasks"][task]["correct"] == right
            assert s["tasks"][task]["interval_95"] == pytest.approx(wilson_by_hand(right, len(mine)))
        same = sum(line["answer"] == first[line["id"]] for line in ok)
        assert s["agreement"]["compared"] == 10 and s["agreement"]["same"] == same
        assert s["agreement"]["interval_95"] == pytest.approx(wilson_by_hand(same, 10))
        assert s["visual_tokens_after"] == pytest.approx(sum(line["visual_tokens_after"] for line in ok) / 10)
        # Kept where the method keeps them: FastV's after its layer K, fewer than its prefill holds.
        assert s["visual_tokens_kept"] == pytest.approx(sum(line["visual_tokens_kept"] for line in ok) / 10)
        assert s["time_to_first_token_s"] == pytest.approx(sum(line["time_to_first_token_s"] for line in ok) / 10)
        assert s["prefill_s"] == pytest.approx(sum(line["prefill_s"] for line in ok) / 10)
        steps = sum(line["generated_tokens"] - 1 for line in ok)
        assert s["decode_tokens_per_s"] == pytest.approx(steps / sum(line["decode_s"] for line in ok))
        assert s["peak_rss_bytes"] == max(line["peak_rss_bytes"] for line in ok)
        assert s["output"] == str(out.with_name(f"cmp.{FILES[report['settings'].index(s)]}.jsonl"))
    assert report["settings"][0]["agreement"]["share"] == 1.0
    fastv = report["settings"][SETTINGS.index("fastv:rate=0.5")]
    assert fastv["visual_tokens_kept"] < fastv["visual_tokens_after"]
    # Nothing left to answer: the rerun reports the same comparison from the files, without loading.
    again = invoke("run", questions, *multi_args(out), "--json")
    assert json.loads(again.stdout) == report and len(tiny_loaded) == 1


def wilson_by_hand(k: int, n: int) -> list[float]:
    """Wilson's score interval from its textbook form: the p solving (p - k/n)^2 = z^2 p(1 - p)/n."""
    z2, phat = 1.96 ** 2, k / n
    a, b, c = 1 + z2 / n, -(2 * phat + z2 / n), phat * phat  # a p^2 + b p + c = 0
    root = math.sqrt(b * b - 4 * a * c)
    return [(-b - root) / (2 * a), (-b + root) / (2 * a)]


def test_wilson_known_values():
    assert wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)  # z^2 / (n + z^2)
    assert wilson(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson(0, 0) is None
    lines = [{"id": i, "correct": i < 7, "task": "t"} for i in range(9)]
    assert summarize(lines)["interval_95"] == pytest.approx(wilson_by_hand(7, 9))


def test_tables_fit_80_columns_and_name_each_file(questions, tmp_path, tiny_loaded):
    out = tmp_path / "t.jsonl"
    result = invoke("run", questions, *multi_args(out), "-c", "dycoke:budget=1")  # unreachable: every record fails
    assert result.exit_code == 1
    text = result.stderr[result.stderr.index("dycoke run: 6 settings"):]
    tables = text[:text.index("\nnote: ")]
    assert all(len(line) <= 80 and line == line.rstrip() for line in tables.splitlines()), tables
    assert "accuracy per task" in tables and f"fastv:rate=0.5: {out.with_name('t.fastv_rate=0.5.jsonl')}" in text
    # Every record but the one with its own compress is refused under dycoke:budget=1 (below its anchors).
    assert "note: dycoke:budget=1: 11 record(s) failed\n" in text and "note: none: 2 record(s) failed\n" in text
    row = next(line for line in tables.splitlines() if line.startswith("dycoke:budget=1 "))
    assert row.split()[1:] == ["117", *row.split()[2:6], "-", "1.00"]  # random:budget=0.3 of 392: 117


def test_a_setting_no_record_ran_under_is_a_row_of_its_reason():
    from dycoke_cli.render.compare import figure_rows

    report = {"settings": [{"label": "dycoke:budget=1", "error": "dycoke cannot keep fewer than 196"}]}
    assert figure_rows(report) == [["dycoke:budget=1", "n/a", "-", "-", "-", "-", "-", "-"]]


def test_shards_write_one_file_per_setting_and_shard(questions, tmp_path, tiny_loaded):
    out = tmp_path / "s.jsonl"
    for i in range(2):
        invoke("run", questions, "-o", out, *FAST, "-c", "none", "-c", "dycoke", "--shard", f"{i}/2")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"s.{tag}.shard-{i}-of-2.jsonl" for tag in ("dycoke", "none") for i in range(2)]
    whole = tmp_path / "whole.jsonl"
    invoke("run", questions, "-o", whole, *FAST, "-c", "none", "-c", "dycoke")
    for tag in ("none", "dycoke"):
        merged = tmp_path / f"merged.{tag}.jsonl"
        assert invoke("merge", *sorted(tmp_path.glob(f"s.{tag}.shard-*")), "-o", merged).exit_code == 0
        by_id = {line["id"]: comparable(line) for line in lines_of(merged)}
        assert by_id == {line["id"]: comparable(line) for line in lines_of(tmp_path / f"whole.{tag}.jsonl")}


@pytest.mark.parametrize("args, message", [
    (["-c", "none", "-c", "none"], "error: setting 'none' is listed twice\n"),
    (["-c", "none", "-c", "evs", "--no-compress"], "error: --no-compress contradicts --compress none evs\n"),
    (["-c", "evs", "-c", "fastv:layer=9"],
     "error: --compress 'fastv:layer=9': fastv: layer=9 leaves no layer to prune in this 4-layer model; use 1 to 3\n"),
    (["-c", "none", "-c", "evs", "--save-kept", "q.jsonl"], "error: --save-kept q.jsonl is a file; give a folder\n"),
    ([a for n in range(1, 66) for a in ("-c", f"evs:budget={n}")],
     "error: 65 settings to compare; at most 64 are compared in one run (shorten the --compress list)\n"),
    (["-c", "none", "-c", "evs:stage=encoder,encoder_layer=3"],
     "error: --compress 'evs:stage=encoder,encoder_layer=3': evs: encoder_layer=3 is past this vision tower's 2 "
     "layers; use 0 to 2\n"),
])
def test_bad_settings_are_one_line_and_exit_2_before_any_answer(tmp_path, monkeypatch, tiny, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.jsonl").write_text(json.dumps({"video": "a.mp4", "question": "q?"}) + "\n")
    result = invoke("run", "q.jsonl", "--model", "random:tiny", *args)
    assert (result.exit_code, result.stderr) == (2, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]


def test_budget_applies_to_every_setting_that_takes_one(questions, tmp_path, tiny_loaded):
    out = tmp_path / "b.jsonl"
    result = invoke("run", questions, "-o", out, *FAST, "-c", "none", "-c", "evs", "-c", "random", "-b", "0.25",
                    "--json")
    report = json.loads(result.stdout)
    assert [s["label"] for s in report["settings"]] == ["none", "evs:budget=0.25", "random:budget=0.25"]
    by_env = CliRunner().invoke(app, ["run", str(questions), "-o", str(tmp_path / "e.jsonl"), *FAST, "-b", "0.25",
                                      "--json"], env={"DYCOKE_COMPRESS": "none evs random"}, catch_exceptions=False)
    assert [s["label"] for s in json.loads(by_env.stdout)["settings"]] == [s["label"] for s in report["settings"]]
    for tag in ("evs_budget=0.25", "random_budget=0.25"):
        q0 = next(line for line in lines_of(tmp_path / f"b.{tag}.jsonl") if line["id"] == "q0")
        assert (q0["visual_tokens_before"], q0["visual_tokens_after"]) == (2 * 196, 2 * 196 // 4)


def test_run_plot_needs_matplotlib_and_draws_accuracy(questions, tmp_path, tiny_loaded, monkeypatch):
    from PIL import Image

    png = tmp_path / "acc.png"
    result = invoke("run", questions, "-o", tmp_path / "p.jsonl", *FAST, "-c", "none", "-c", "evs", "--plot", png)
    assert result.exit_code == 1 and Image.open(png).size[0] > 1000  # one panel for all, one per task
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("run", questions, "-o", tmp_path / "p2.jsonl", *FAST, "--plot", png)
    assert result.exit_code == 2 and "--plot needs matplotlib" in result.stderr


def test_accuracy_plot_has_a_legend_entry_per_method_and_points_side_by_side():
    from dycoke_cli.render.compare import figure

    def setting(label, method, tokens, accuracy):
        figure_ = {"scored": 10, "accuracy": accuracy, "interval_95": wilson(round(10 * accuracy), 10)}
        return {"label": label, "method": method, "error": None, "visual_tokens_kept": tokens,
                "tasks": {"t": figure_}, **figure_}

    report = {"settings": [setting("none", "none", 128, 1.0), setting("evs:budget=0.25", "evs", 32, 0.5),
                           setting("vidcom2:budget=0.25", "vidcom2", 32, 0.5),
                           setting("evs:budget=0.5", "evs", 64, 0.8)]}
    fig = figure(report)
    axes = fig.axes
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["none", "evs", "vidcom2"]
    assert [ax.get_title() for ax in axes] == ["all questions", "t"]
    assert_apart(axes[0], 32, 50.0)


def assert_apart(ax, x, y) -> None:
    """Every marker drawn at data (x, y) lands at its own place on screen, at least 4 pixels apart."""
    fig = ax.figure
    fig.canvas.draw()
    where = []
    for line in ax.get_lines():
        for px, py in zip(*line.get_data()):
            if px == x and py == y and line.get_marker() not in ("None", "", None, "_"):
                where.append(tuple(line.get_transform().transform((px, py))))
    assert len(where) >= 2
    xs = sorted(p[0] for p in where)
    assert all(b - a >= 4 for a, b in zip(xs, xs[1:])), where
