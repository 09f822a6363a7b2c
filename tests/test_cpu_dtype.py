"""`--dtype auto` on the CPU: the choice from flags and probe timings, the cache, the override, -v.

Nothing here times anything: probe timings are handed in or faked.
"""

from __future__ import annotations

import json

import pytest

from dycoke_cli.models import cpu_dtype as cd
from dycoke_cli.models.cpu_dtype import CpuInfo, Timing, choose

SKYLAKE = CpuInfo("Intel(R) Xeon(R) Processor @ 2.00GHz", frozenset(), known=True)
SAPPHIRE = CpuInfo("Intel(R) Xeon(R) Platinum 8480+", frozenset({"amx_bf16", "avx512_bf16"}), known=True)
ARM = CpuInfo("Neoverse-V1", frozenset(), known=False)


def test_native_bf16_flags_choose_bf16_without_timing():
    choice = choose(SAPPHIRE)
    assert choice.dtype == "bfloat16"
    assert "native bf16" in choice.line and "amx_bf16" in choice.line
    # the flags win even over a (noisy) probe that says otherwise
    assert choose(SAPPHIRE, Timing(bf16_s=0.5, fp32_s=0.1)).dtype == "bfloat16"


def test_no_native_bf16_and_slow_bf16_chooses_fp32_and_says_why():
    choice = choose(SKYLAKE, Timing(bf16_s=0.212, fp32_s=0.041))
    assert choice.dtype == "float32"
    assert choice.line == "dtype: float32 on this CPU (no avx512_bf16/amx: bf16 matmul measured 5.2x slower)"
    cached = choose(SKYLAKE, Timing(bf16_s=0.212, fp32_s=0.041, cached=True))
    assert "cached probe 5.2x slower" in cached.line


@pytest.mark.parametrize("bf16_s, expected", [(0.11, "bfloat16"), (0.129, "bfloat16"), (0.05, "bfloat16"),
                                              (0.14, "float32")])
def test_threshold_keeps_bf16_when_close(bf16_s, expected):
    assert choose(ARM, Timing(bf16_s=bf16_s, fp32_s=0.1)).dtype == expected
    assert "bf16 support unknown" in choose(ARM, Timing(bf16_s=bf16_s, fp32_s=0.1)).reason


def test_no_timing_keeps_the_old_default():
    assert choose(SKYLAKE, None).dtype == "bfloat16"


@pytest.mark.parametrize("value, expected", [("float32", "float32"), ("bfloat16", "bfloat16"), ("FP32", "float32"),
                                             ("bf16", "bfloat16")])
def test_override_wins(value, expected):
    choice = choose(SAPPHIRE, Timing(0.2, 0.04), override=value)
    assert choice.dtype == expected and "DYCOKE_CPU_DTYPE" in choice.reason


def test_bad_override_is_ignored_and_said():
    choice = choose(SKYLAKE, Timing(0.2, 0.04), override="float16")
    assert choice.dtype == "float32" and "ignored" in choice.reason


def test_parse_cpuinfo():
    x86 = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    model, flags, known = cd.parse_cpuinfo(x86 + x86.replace("Intel Xeon", "other"))
    assert model == "Intel Xeon" and {"avx512_bf16", "amx_bf16"} <= flags and known
    model, flags, known = cd.parse_cpuinfo("processor : 0\nFeatures : fp asimd bf16 sve\nCPU part : 0xd40\n")
    assert "bf16" in flags and not known  # Arm names: the probe decides


def test_probe_timing_is_cached_per_cpu_and_torch(tmp_path, monkeypatch):
    calls = []

    def fake_probe(*args, **kwargs):
        calls.append(1)
        return Timing(bf16_s=0.2, fp32_s=0.05)

    monkeypatch.setattr(cd, "probe", fake_probe)
    path = tmp_path / "cpu-dtype.json"
    first = cd.cached_timing(SKYLAKE, path)
    second = cd.cached_timing(SKYLAKE, path)
    assert len(calls) == 1 and not first.cached and second.cached and second.ratio == pytest.approx(4.0)
    entry = json.loads(path.read_text())[cd.cache_key(SKYLAKE)]
    assert entry["ratio"] == 4.0 and "torch" in cd.cache_key(SKYLAKE)
    cd.cached_timing(ARM, path)  # another processor: measured again, both kept
    assert len(calls) == 2 and len(json.loads(path.read_text())) == 2
    path.write_text("{not json")  # a damaged cache is measured again and rewritten
    assert not cd.cached_timing(SKYLAKE, path).cached and len(calls) == 3


def test_cpu_dtype_reads_the_cache_under_dycoke_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYCOKE_CACHE", str(tmp_path))
    monkeypatch.delenv(cd.ENV, raising=False)
    monkeypatch.setattr(cd, "read_cpu", lambda: SKYLAKE)
    monkeypatch.setattr(cd, "probe", lambda *a, **k: Timing(bf16_s=0.3, fp32_s=0.1))
    assert cd.cpu_dtype().dtype == "float32"
    assert (tmp_path / "cpu-dtype.json").is_file()
    monkeypatch.setattr(cd, "probe", lambda *a, **k: pytest.fail("the cached timing must be used"))
    assert "cached probe 3.0x slower" in cd.cpu_dtype().line
    monkeypatch.setenv(cd.ENV, "bfloat16")
    assert cd.cpu_dtype().dtype == "bfloat16"


def test_resolve_dtype_notes_the_choice(monkeypatch):
    from dycoke_cli.models.loading import resolve_dtype

    monkeypatch.setenv(cd.ENV, "float32")
    notes: list[str] = []
    assert resolve_dtype("auto", "cpu", notes) == "float32"
    assert notes == ["dtype: float32 on this CPU (set by DYCOKE_CPU_DTYPE)"]
    notes.clear()
    assert resolve_dtype("bfloat16", "cpu", notes) == "bfloat16" and notes == []
    assert resolve_dtype("auto", "cpu") == "float32"  # the old two-argument call still works


@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_quantized_loads_answer_under_an_fp32_auto_choice(monkeypatch, quant):
    """bitsandbytes computes the quantized linears in bf16; the rest of the model in the chosen fp32."""
    import numpy as np

    from dycoke_cli.compress.spec import parse_spec
    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.models import load_model
    from dycoke_cli.settings import Generation
    from dycoke_cli.video.frames import Frames

    monkeypatch.setenv(cd.ENV, "float32")
    lm = load_model("random:tiny", device="cpu", dtype="auto", quant=quant)
    assert lm.dtype == "float32" and lm.quant == quant
    assert any("float32" in line for line in lm.choices)
    frames = Frames(pixels=np.full((2, 48, 64, 3), 120, np.uint8), timestamps=[0.0, 0.5], indices=[0, 1],
                    fps=2.0, duration=1.0)
    spec = parse_spec("none")
    answer = Session(lm, encode_frames(lm, "x", frames, 0.0, spec), spec).ask("what?", Generation(3, 3))
    assert len(answer.token_ids) == 3


def test_cast_vision_leaves_the_language_model():
    import torch

    from dycoke_cli.models import load_model

    lm = load_model("random:tiny", device="cpu", dtype="bfloat16", quant="none")
    cast = cd.cast_vision(lm.model, "float32")
    assert {"vision_tower", "multi_modal_projector", "image_newline"} <= set(cast)
    assert lm.model.model.vision_tower.embeddings.patch_embedding.weight.dtype == torch.float32
    assert lm.model.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
