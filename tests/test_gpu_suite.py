"""benchmarks/gpu/suite.py works before a GPU is ever lent: its dry run on the CPU (tiny models, 4
frames, 4 tokens) writes results that parse and hold the expected rows with sane numbers; the deadline
and the report logic are checked in-process on fake rows."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu" / "suite.py"


def load_suite():
    return load_script("benchmarks/gpu/suite.py", "gpu_suite")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-dry-run")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(SUITE), "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout, seconds


def test_dry_run_writes_both_files(dry_run):
    out, stdout, _ = dry_run
    data = json.loads((out / "results.json").read_text())
    markdown = (out / "RESULTS-gpu.md").read_text()
    assert data["meta"]["dry_run"] is True and data["complete"] is True and not data["stopped"]
    assert data["meta"]["pyav_imported"] is False  # the GPU image has no PyAV
    assert "DRY RUN" in markdown and "## Goals" in markdown and "## llava-7b/bf16:" in markdown
    assert "| dycoke:p=0 |" in markdown
    # one progress line per measurement, then the summary last (what a caller with only the tail sees)
    assert stdout.count("llava-7b/bf16 dycoke r") == 2 and "== summary (best of repeats) ==" in stdout
    assert stdout.rstrip().splitlines()[-1].startswith("wrote ")


def test_dry_run_parts_and_rows(dry_run):
    out, _, _ = dry_run
    data = json.loads((out / "results.json").read_text())
    status = {p["key"]: p["status"] for p in data["parts"]}
    for key in ("llava-7b/bf16", "llava-7b/bf16-budget", "llava-7b/4bit"):
        assert status[key] == "done", data["parts"]
    assert status["llava-0.5b/bf16"] == "skipped"
    # the Qwen slots run on the families' tiny specs when the registry has them, else say why not
    qwen = [p for p in data["parts"] if p["key"].startswith("qwen")]
    assert {p["key"] for p in qwen} == {"qwen2.5-vl-7b/bf16", "qwen2.5-vl-7b/4bit", "qwen3-vl-8b/bf16",
                                        "qwen3-vl-8b/4bit"}
    for p in qwen:
        assert p["status"] == "done" if spec_known(p["model"]) else (p["status"] == "skipped" and p["reason"])
    rows = [r for r in data["rows"] if "error" not in r]
    assert not [r for r in data["rows"] if "error" in r]
    core = [(r["setting"], r["repeat"]) for r in rows if r["part"] == "llava-7b/bf16"]
    assert core == [("none", 1), ("dycoke", 1), ("dycoke:p=0", 1), ("none", 2), ("dycoke", 2), ("dycoke:p=0", 2)]
    budget = {r["method"] for r in rows if r["part"] == "llava-7b/bf16-budget"}
    assert {"dycoke", "uniform", "fastv"} <= budget
    assert {r["quant"] for r in rows if r["part"].endswith("/4bit")} == {"4bit"}


def spec_known(spec: str) -> bool:
    from dycoke_cli.errors import DycokeError
    from dycoke_cli.models.random_specs import random_spec

    try:
        random_spec(spec)
        return True
    except DycokeError:
        return False


def test_dry_run_numbers_are_sane(dry_run):
    out, _, _ = dry_run
    data = json.loads((out / "results.json").read_text())
    for r in data["rows"]:
        stages = r["preprocess_s"] + r["vision_encode_s"] + r["ttm_s"] + r["prefill_s"]
        assert r["ttft_s"] == pytest.approx(stages, rel=1e-6), r
        for key in ("vision_encode_s", "prefill_s", "ttft_s", "decode_s", "total_s", "decode_tokens_per_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["total_s"] >= r["ttft_s"] and r["generated_tokens"] == 4 and r["frames"] == 4
        assert 0 < r["visual_tokens_after"] <= r["visual_tokens_before"]
        if r["model"] == "random:tiny":
            assert r["visual_tokens_before"] == 4 * 196  # 14 x 14 per 384 px frame
        assert r["peak_rss_bytes"] > 0 and r["peak_allocated_bytes"] is None
        if r["method"] == "dycoke" or r["budget"]:
            assert r["visual_tokens_after"] < r["visual_tokens_before"] or r["method"] == "fastv"
        if "followup_ttft_s" in r:  # the follow-up reuses the cached video prefix
            assert 0 < r["followup_ttft_s"] and r["followup_reused_tokens"] > r["visual_tokens_after"]
    budget = [r for r in data["rows"] if r["part"] == "llava-7b/bf16-budget" and r["method"] != "fastv"]
    assert all(r["visual_tokens_after"] <= 196 for r in budget)  # 0.25 of 784
    summary = {(s["part"], s["setting"]): s for s in data["summary"]}
    assert summary[("llava-7b/bf16", "none")]["ttft_gain_vs_none"] == 1.0
    assert summary[("llava-7b/bf16", "dycoke")]["repeats"] == 2
    assert [g["measured"] is not None for g in data["goals"]] == [True] * 5
    encoder = [r for r in data["rows"] if r["part"] == "llava-7b/encoder" and r["setting"] != "none"]
    assert {r["setting"] for r in encoder} >= {"dycoke:stage=encoder,encoder_layer=1", "earlytom:encoder_layer=1"}
    assert all(r["visual_tokens_after"] < r["visual_tokens_before"] for r in encoder if r["method"] != "dycoke"
               or "stage" in r["setting"])


def test_deadline_skips_everything_cleanly(tmp_path):
    suite = load_suite()
    run = suite.Run(out=tmp_path, budget_s=0.0, dry_run=True)
    suite.execute(suite.build_plan(dry_run=True), run)
    run.write()
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["rows"] == [] and data["parts"]
    assert all(p["status"] == "skipped" for p in data["parts"])
    assert any(p["reason"].startswith("deadline") for p in data["parts"])
    assert "Status: skipped" in (tmp_path / "RESULTS-gpu.md").read_text()


def test_priorities_reserve_time_for_more_important_parts(tmp_path):
    suite = load_suite()
    run = suite.Run(out=tmp_path, budget_s=1e9, dry_run=True)
    models = suite.Models(run)
    first, second = suite.build_plan(dry_run=True)[:2]
    assert first.priority < second.priority
    # 4 + 3 measurements at 0.5 s plus one load of 3 s: the estimate the deadline check uses
    assert suite.estimate(first, models, 1.0) == pytest.approx(3 + 0.5 * 2 * 3)
    models.measured[first.model] = [2.0, 4.0]
    assert suite.estimate(second, models, 1.0) == pytest.approx(3 + 3.0 * len(second.specs))


def _row(part, setting, ttft, rate, reserved=None, model="random:llava-onevision-7b", quant="none"):
    return {"part": part, "model": model, "dtype": "bfloat16", "quant": quant, "frames": 32, "new_tokens": 64,
            "setting": setting, "method": setting.split(":")[0], "budget": None, "repeat": 1,
            "visual_tokens_before": 6272, "visual_tokens_after": 3000, "prompt_tokens": 3030, "preprocess_s": 0.01,
            "vision_encode_s": 0.05, "ttm_s": 0.01, "prefill_s": ttft - 0.07, "ttft_s": ttft, "decode_s": 1.0,
            "decode_tokens_per_s": rate, "total_s": ttft + 1, "peak_allocated_bytes": reserved,
            "peak_reserved_bytes": reserved, "peak_rss_bytes": None}


def test_goals_from_rows():
    suite = load_suite()
    rows = [_row("llava-7b/bf16", "none", 0.9, 40.0), _row("llava-7b/bf16", "none", 0.8, 41.0),
            _row("llava-7b/bf16", "dycoke", 0.4, 38.0), _row("llava-7b/bf16", "dycoke:p=0", 0.41, 39.5),
            _row("llava-7b/4bit", "dycoke", 0.5, 20.0, reserved=7.5e9, quant="4bit"),
            {"part": "llava-7b/4bit", "setting": "none", "repeat": 1, "error": "OutOfMemoryError: x"}]
    goals = {g["goal"].split(" (")[0]: g for g in suite.goals(rows, dry_run=False)}
    assert goals["time to first token none/dycoke"]["measured"] == pytest.approx(2.0)  # best none 0.8 / 0.4
    assert goals["time to first token none/dycoke"]["met"] is True
    assert goals["time to first token with DyCoke"]["met"] is True
    assert goals["DP decode overhead"]["measured"] == pytest.approx(100 * (39.5 / 38 - 1), abs=1e-3)
    assert goals["peak memory, 4-bit + DyCoke"]["measured"] == pytest.approx(7.5)
    assert "NO" not in suite.render_markdown({
        "meta": {}, "complete": True, "stopped": "", "elapsed_s": 1.0, "parts": [], "rows": rows,
        "summary": suite.summarise(rows), "goals": suite.goals(rows, False), "events": []})
