"""`dycoke profile`: the settings grammar, the FLOP model against hand-computed values for the real
0.5B and 7B dimensions, ratios from measured numbers, and the report's JSON schema end to end."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from dycoke_cli.errors import SettingsError
from dycoke_cli.models.random_specs import all_specs
from dycoke_cli.profile.flops import LMDims, prefill_flops, prefill_flops_dense
from dycoke_cli.profile.report import add_agreement, add_ratios, agreement, spread
from dycoke_cli.profile.runner import plan_specs

TINY = ["--model", "random:tiny", "--device", "cpu", "--dtype", "float32", "--quant", "none", "--frames", "4",
        "--max-new-tokens", "4"]


def invoke(*args):
    from dycoke_cli.cli import app

    return CliRunner().invoke(app, ["profile", *args], catch_exceptions=False)


# --- settings ----------------------------------------------------------------------------------------

def test_plans_defaults_sweeps_budgets_and_duplicates():
    assert [s.label for s in plan_specs(None, None)] == ["none", "dycoke"]
    sweep = plan_specs(None, "k=0.3,0.5,0.7,0.9")
    assert [s.label for s in sweep] == ["none"] + [f"dycoke:k={k}" for k in ("0.3", "0.5", "0.7", "0.9")]
    assert [dict(s.values).get("k") for s in sweep] == [None, 0.3, 0.5, 0.7, 0.9]
    budgets = plan_specs(["none", "evs"], "random:budget=0.5,0.25")
    assert [s.label for s in budgets] == ["none", "evs", "random:budget=0.5", "random:budget=0.25"]
    shared = plan_specs(["none", "dycoke", "evs:budget=100"], None, budget="0.25")
    assert [s.label for s in shared] == ["none", "dycoke:budget=0.25", "evs:budget=100"]
    both = plan_specs(["dycoke", "none"], "k=0.5")
    assert [s.label for s in both] == ["dycoke", "none", "dycoke:k=0.5"]
    for compress, sweep_text in [(["none", "none"], None), (["none", ""], None), (None, "k"), (None, "k="),
                                 (None, "k=0.3,,0.5"), (None, ":k=0.5"), (None, "k=0.3,1.2"),
                                 (["fast"], None), (["none:k=1"], None)]:
        with pytest.raises(SettingsError):
            plan_specs(compress, sweep_text)


@pytest.mark.parametrize("args, needle", [
    (["--compress", "none", "--compress", "fast"], "unknown method 'fast'"),
    (["--compress", "dycoke:k=2"], "[0, 1)"),
    (["--compress", "none:p=0.5"], "unknown key 'p' for none"),
    (["--sweep", "k"], "--sweep"),
    (["--sweep", "k=0.3,1.5"], "--sweep 'dycoke:k=1.5'"),
    (["--compress", "dycoke:layer=9"], "leaves no layer to prune in this 4-layer model"),  # from config.json
    (["--repeats", "0"], "--repeats"),
])
def test_bad_settings_exit_2_with_one_line(clip, tiny, args, needle):  # tiny: materialised before, so quiet
    result = invoke(str(clip), *TINY, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert needle in result.stderr
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_plot_without_matplotlib_and_bad_output_exit_2(clip, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = invoke(str(clip), *TINY, "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 2 and "pip install matplotlib" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "plain.txt").write_text("")
    result = invoke(str(clip), *TINY, "--output", str(tmp_path / "plain.txt" / "r.json"))
    assert result.exit_code == 2 and "plain.txt is not a folder" in result.stderr
    result = invoke(str(clip), *TINY, "--output", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.stderr


# --- FLOPs -------------------------------------------------------------------------------------------

QWEN2_05B = LMDims(hidden=896, ffn=4864, layers=24, heads=14, kv_heads=2, head_dim=64)
QWEN2_7B = LMDims(hidden=3584, ffn=18944, layers=28, heads=28, kv_heads=4, head_dim=128)


def test_dims_come_from_the_real_configs():
    from transformers import Qwen2Config

    for name, dims in [("llava-onevision-0.5b", QWEN2_05B), ("llava-onevision-7b", QWEN2_7B)]:
        assert LMDims.from_config(Qwen2Config(**all_specs()[name].text)) == dims


def test_flops_equal_hand_computed_values():
    full, kept = 32 * 196 + 1 + 100, 2960 + 1 + 100  # 32 frames + newline + ~100 text tokens; clean K=0.7
    # 7B, n = 6373, per layer: 4nd^2 = 327,446,167,552; 2n^2d = 291,129,244,672; 2ndm = 865,393,442,816;
    # sum 1,483,968,855,040, times 28 layers. At n = 3061: 157,274,865,664 + 67,162,160,128 +
    # 415,655,002,112 = 640,092,027,904 per layer.
    assert prefill_flops(full, QWEN2_7B) == 41_551_127_941_120
    assert prefill_flops(kept, QWEN2_7B) == 17_922_576_781_312
    assert prefill_flops(full, QWEN2_05B) == 3_571_118_401_536
    assert prefill_flops(8 * 196 + 1 + 100, QWEN2_05B) == 597_571_430_400
    # Qwen2's real arithmetic: 2 FLOPs per multiply-add, K/V of width kv_heads*head_dim, three SwiGLU matrices.
    assert prefill_flops_dense(full, QWEN2_7B) == 99_474_564_259_840
    assert prefill_flops_dense(8 * 196 + 1 + 100, QWEN2_05B) == 1_434_027_872_256


def test_flops_match_the_published_41_and_18_tflops():
    # DYCOKE.md: "~41 TFLOPs full vs ~18 at K = 0.7 (43%)". The published figures have two significant
    # digits and "about 100" text tokens moves the total by ~0.4% per 25 tokens: 3% covers both, while
    # the other readings of the formula miss by far (3 x 2ndm for SwiGLU: ~90; GQA-narrowed K/V: ~37.6).
    full, kept = 32 * 196 + 1 + 100, 2960 + 1 + 100
    assert prefill_flops(full, QWEN2_7B) / 1e12 == pytest.approx(41, rel=0.03)
    assert prefill_flops(kept, QWEN2_7B) / 1e12 == pytest.approx(18, rel=0.03)
    assert prefill_flops(kept, QWEN2_7B) / prefill_flops(full, QWEN2_7B) == pytest.approx(0.43, abs=0.005)


# --- aggregation from numbers ------------------------------------------------------------------------

def _entry(label, compression, prefill, tokens, rss, ids):
    timings = {key: spread(values) for key, values in {
        "video_decode_s": [0.1, 0.3, 0.2], "preprocess_s": [0.1] * 3, "vision_encode_s": [1.0, 1.2, 1.1],
        "compress_s": [0.01] * 3, "prefill_s": prefill, "time_to_first_token_s": [p + 1.21 for p in prefill],
        "decode_s": [1.0] * 3, "decode_tokens_per_s": [10.0] * 3, "total_s": [p + 2.4 for p in prefill]}.items()}
    return {"label": label, "compression": compression, "timings": timings, "visual_tokens_after": tokens,
            "visual_tokens_kept": tokens, "kv_entries_attended_mean": tokens + 20.0, "prefill_flops": tokens * 1000, "vision_flops": tokens * 10,
            "memory": {"peak_rss_bytes": rss},
            "answer": " ".join(map(str, ids)), "answer_token_ids": ids}


def test_ratios_and_agreement_from_measured_numbers():
    settings = [_entry("none", {"method": "none"}, [2.0, 4.0, 3.0], 1000, 400, [1, 2, 3, 4]),
                _entry("dycoke", {"method": "dycoke"}, [1.0, 1.5, 2.0], 475, 300, [1, 2, 5, 3])]
    assert settings[0]["timings"]["prefill_s"] == {"median": 3.0, "min": 2.0, "max": 4.0, "runs": [2.0, 4.0, 3.0]}
    assert add_agreement(settings) == "none"
    add_ratios(settings)
    first, second = (s["ratios"] for s in settings)
    assert all(v == 1.0 for v in first["speedup"].values())
    assert second["speedup"]["prefill_s"] == 3.0 / 1.5
    assert second["speedup"]["total_s"] == (3.0 + 2.4) / (1.5 + 2.4)
    assert second["speedup"]["vision_encode_s"] == 1.0
    assert second["memory"] == {"peak_rss_bytes": 300 / 400}
    assert second["prefill_flops"] == second["visual_tokens"] == second["vision_flops"] == 0.475
    assert settings[0]["agreement"] == {"exact_match": True, "token_overlap": 1.0, "common_prefix_tokens": 4}
    assert settings[1]["agreement"] == {"exact_match": False, "token_overlap": 0.75, "common_prefix_tokens": 2}
    assert agreement([], [], "", "")["token_overlap"] == 1.0


# --- end to end --------------------------------------------------------------------------------------

SETTING_KEYS = {
    "label", "compression", "frames", "timings", "vision_from_rounds", "visual_tokens_before", "visual_tokens_after",
    "visual_tokens_kept", "visual_tokens_kept_from_layer", "visual_tokens_kept_pct", "prompt_tokens", "prefill_tokens",
    "generated_tokens", "finish_reason", "kv_entries_full", "kv_entries_full_mean", "kv_entries_attended_mean", "prefill_flops", "prefill_flops_dense", "vision_flops", "memory", "answer",
    "answer_token_ids",
    "answers_identical_across_repeats", "agreement", "ratios",
}
REPORT_KEYS = {
    "schema", "video", "question", "model", "family", "device", "dtype", "quantization", "random_weights",
    "frames", "repeats", "warmup_rounds", "generation", "lm_dims", "tower_dims", "flops_formula", "flops_dense_formula",
    "baseline", "agreement_reference", "encodings", "settings", "notes",
}
STAGE_KEYS = {"video_decode_s", "preprocess_s", "vision_encode_s", "compress_s", "prefill_s",
              "time_to_first_token_s", "decode_s", "decode_tokens_per_s", "total_s"}


def test_profile_report_end_to_end(clip, tmp_path, tiny):
    out = tmp_path / "report.json"
    result = invoke(str(clip), "What is here?", *TINY, "--compress", "none", "--compress", "dycoke:k=0.5",
                    "--repeats", "2", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert len(result.stdout.splitlines()) == 1  # stdout holds the JSON document and nothing else
    assert json.loads(out.read_text()) == report
    assert "dycoke:k=0.5" in result.stderr and "prefill" in result.stderr  # the table
    assert set(report) == REPORT_KEYS
    assert report["schema"] == "dycoke.profile/2" and report["repeats"] == 2 and report["frames"] == 4
    assert report["baseline"] == report["agreement_reference"] == "none" and report["random_weights"]
    assert any("random weights" in n for n in report["notes"])
    assert [e["round"] for e in report["encodings"]] == [1, 2]

    none, dycoke = report["settings"]
    for s in (none, dycoke):
        assert set(s) == SETTING_KEYS and set(s["timings"]) == STAGE_KEYS
        assert set(s["ratios"]) == {"speedup", "memory", "prefill_flops", "vision_flops", "visual_tokens",
                                    "kv_entries_attended"}
        assert len(s["timings"]["prefill_s"]["runs"]) == 2 and s["vision_from_rounds"] == [1, 2]
        assert "peak_rss_bytes" in s["memory"]
        for key in STAGE_KEYS:
            t = s["timings"][key]
            assert t["min"] <= t["median"] <= t["max"]
        # the shared stages are the rounds' encodings, measurement for measurement
        assert s["timings"]["vision_encode_s"]["runs"] == [e["vision_encode_s"] for e in report["encodings"]]
        dims = LMDims(**report["lm_dims"])
        assert s["prefill_flops"] == prefill_flops(s["prefill_tokens"], dims)
        assert s["ratios"]["speedup"]["prefill_s"] == (none["timings"]["prefill_s"]["median"]
                                                       / s["timings"]["prefill_s"]["median"])
        assert s["ratios"]["prefill_flops"] == s["prefill_flops"] / none["prefill_flops"]
        assert s["ratios"]["memory"]["peak_rss_bytes"] == s["memory"]["peak_rss_bytes"] / none["memory"]["peak_rss_bytes"]
    assert report["lm_dims"] == {"hidden": 64, "ffn": 128, "layers": 4, "heads": 4, "kv_heads": 2, "head_dim": 16}
    assert (none["visual_tokens_after"], dycoke["visual_tokens_after"]) == (4 * 196, 196 + 3 * 98)
    assert none["compression"] == {"method": "none", "params": {}, "budget": None, "counters": {}}
    assert dycoke["compression"]["params"] == {"k": 0.5, "variant": "clean", "p": 0.7, "layer": 3, "gate": "reuse",
                                               "stage": "prefill", "encoder_layer": 8}
    # the tower: 2 SigLIP layers of width 32 (MLP 64) over 27 x 27 patches of each of the 4 frames
    assert report["tower_dims"] == {"hidden": 32, "mlp": 64, "layers": 2}
    n = 27 * 27
    assert none["vision_flops"] == dycoke["vision_flops"] == 4 * 2 * 2 * (4 * n * 32 * 32 + 2 * n * n * 32 + 2 * n * 32 * 64)
    assert none["agreement"]["exact_match"] and none["agreement"]["token_overlap"] == 1.0
    assert none["answers_identical_across_repeats"]  # greedy decoding is deterministic
    assert dycoke["ratios"]["visual_tokens"] == 490 / 784
    assert dycoke["kv_entries_attended_mean"] < dycoke["kv_entries_full"]


def test_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from dycoke_cli.render.profile import plot

    settings = [_entry("none", {"method": "none"}, [2.0, 4.0, 3.0], 1000, 400, [1, 2]),
                _entry("dycoke", {"method": "dycoke"}, [1.0, 1.5, 2.0], 475, 300, [1, 3])]
    report = {"model": "random:tiny", "frames": 4, "device": "cpu", "settings": settings,
              "agreement_reference": add_agreement(settings)}
    plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_video_exits_2_before_loading(tmp_path):
    result = invoke(str(tmp_path / "nope.mp4"), *TINY)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
