"""The CPU decode path: kernel and attention choices, packing as decoding pays for it, per-layer threads.

Choices are tested from handed-in timings (both kinds of processor: with native bf16, where bf16
F.linear is merely slow on one row, and without, where it is emulated), so nothing here depends on
this machine's speed. Kernels are checked against independent references written here; the decode
path as a whole against the stock path, token for token, on the built-in model's clips.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dycoke_cli.errors import SettingsError
from dycoke_cli.models import cpu_decode as cd
from dycoke_cli.models import cpu_dtype, cpu_threads, decode_attention
from dycoke_cli.models import packed_fp16 as pf
from dycoke_cli.models.cpu_decode import KernelTiming, choose_attention, choose_kernel
from dycoke_cli.models.cpu_threads import ThreadTuner

GiB = 2**30
# Probe timings (seconds, one core) as measured on the two kinds of processor: a Zen 4 with
# avx512_bf16 (this repository's figures), and a Xeon without it (bf16 emulated: slower than fp32).
NATIVE = KernelTiming({"bfloat16": 0.0097, "float32": 0.0133, "fp16": 0.0026, "sdpa bfloat16": 0.0031,
                       "grouped bfloat16": 0.00045, "sdpa float32": 0.00038, "grouped float32": 0.00023},
                      pack_s=0.47, params=34_865_152)
EMULATED = KernelTiming({"bfloat16": 0.061, "float32": 0.0122, "fp16": 0.0051, "sdpa bfloat16": 0.0125,
                         "grouped bfloat16": 0.0009, "sdpa float32": 0.0004, "grouped float32": 0.0003},
                        pack_s=0.61, params=34_865_152)


# ---------------------------------------------------------------- choices (pure)


def test_kernel_choice_on_both_kinds_of_processor():
    native = choose_kernel("bfloat16", NATIVE, extra_bytes=GiB, available_bytes=16 * GiB)
    assert native.kernel == "fp16" and not native.eager
    assert native.line == ("decode kernel: fp16 (probe: 3.7x faster than bfloat16 F.linear on one row; weights "
                           "packed as decoding pays for it, up to 1.00 GiB)")
    # Without native bf16 `--dtype auto` loads float32 (cpu_dtype.py): the packed kernel halves the bytes.
    emulated = choose_kernel("float32", EMULATED, extra_bytes=GiB, available_bytes=16 * GiB)
    assert emulated.kernel == "fp16" and "2.4x faster than float32" in emulated.reason
    cached = KernelTiming(NATIVE.seconds, NATIVE.pack_s, NATIVE.params, cached=True)
    assert "cached probe" in choose_kernel("bfloat16", cached).reason


@pytest.mark.parametrize("timing, reason", [
    (None, "unavailable"),
    (KernelTiming({"bfloat16": 0.01, "float32": 0.01}, 0.0, 1), "unavailable"),  # no fbgemm in this build
    (KernelTiming({"bfloat16": 0.01, "float32": 0.01, "fp16": 0.0095}, 0.1, 1), "only 1.05x"),
])
def test_kernel_choice_keeps_the_dtype_where_packing_does_not_win(timing, reason):
    choice = choose_kernel("bfloat16", timing)
    assert choice.kernel == "dtype" and reason in choice.reason


def test_kernel_choice_obeys_dtype_overrides_and_memory():
    assert choose_kernel("float32", NATIVE, explicit_dtype=True).line == \
        "decode kernel: dtype (--dtype float32 given: every stage in float32)"
    forced = choose_kernel("float32", None, override="fp16", explicit_dtype=True)
    assert forced.kernel == "fp16" and forced.eager and "DYCOKE_DECODE_KERNEL" in forced.reason
    assert choose_kernel("bfloat16", NATIVE, override="dtype").kernel == "dtype"
    tight = choose_kernel("bfloat16", NATIVE, extra_bytes=3 * GiB, available_bytes=4 * GiB)
    assert tight.kernel == "dtype" and "over half the 4.0 GiB available" in tight.reason
    small = choose_kernel("bfloat16", NATIVE, extra_bytes=5 * 2**20, available_bytes=16 * GiB)  # a tiny model
    assert small.reason.endswith("weights packed as decoding pays for it, up to 5 MiB")


def test_attention_choice():
    assert choose_attention("bfloat16", NATIVE).line == \
        "decode attention: grouped (probe: 6.9x faster than SDPA over 2,048 cached tokens in bfloat16)"
    slow = KernelTiming({"sdpa float32": 0.0002, "grouped float32": 0.0003}, 0.0, 1)
    assert choose_attention("float32", slow).kernel == "sdpa"
    assert choose_attention("float16", NATIVE).reason == "not probed in float16"
    assert choose_attention("bfloat16", NATIVE, override="sdpa").kernel == "sdpa"


def test_probe_is_cached_per_processor_and_torch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cd, "probe", lambda: calls.append(1) or NATIVE)
    xeon = cpu_dtype.CpuInfo("Intel(R) Xeon(R) Processor @ 2.00GHz", frozenset(), True)
    epyc = cpu_dtype.CpuInfo("AMD EPYC", frozenset({"avx512_bf16"}), True)
    monkeypatch.setattr(cpu_dtype, "read_cpu", lambda: xeon)
    path = tmp_path / "cpu-dtype.json"
    first, second = cd.cached_probe(path), cd.cached_probe(path)
    assert len(calls) == 1 and not first.cached and second.cached and second.seconds == NATIVE.seconds
    key = cpu_dtype.cache_key(xeon, cd.PROBE_NAME)
    assert key.startswith("decode-") and f"torch {torch.__version__}" in key and "Xeon" in key
    monkeypatch.setattr(cpu_dtype, "read_cpu", lambda: epyc)  # another processor: measured again, both kept
    cd.cached_probe(path)
    assert len(calls) == 2 and len(json.loads(path.read_text())) == 2


def test_bad_environment_values_are_settings_errors(monkeypatch):
    monkeypatch.setenv(cd.KERNEL_ENV, "fast")
    with pytest.raises(SettingsError, match="DYCOKE_DECODE_KERNEL='fast'"):
        cd.read_overrides()
    monkeypatch.setenv(cd.KERNEL_ENV, "FP16")
    monkeypatch.setenv(cd.ATTENTION_ENV, "flash")
    with pytest.raises(SettingsError, match="DYCOKE_DECODE_ATTENTION"):
        cd.read_overrides()
    monkeypatch.delenv(cd.ATTENTION_ENV)
    assert cd.read_overrides() == ("fp16", "auto")
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(cpu_threads.ENV, bad)
        with pytest.raises(SettingsError, match="DYCOKE_THREADS"):
            cpu_threads.read_override()


# ---------------------------------------------------------------- kernels against references


def test_packed_linear_matches_fp16_weights_in_fp32_and_leaves_long_inputs_alone():
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(96, CHUNK + 40, bias=True)  # two row blocks
    with torch.no_grad():
        linear.weight.normal_(0, 0.05, generator=g)
        linear.bias.normal_(0, 0.05, generator=g)
    pf.CHUNK_ROWS, old = CHUNK, pf.CHUNK_ROWS
    try:
        while not pf.pack_next_block(linear):
            pass
    finally:
        pf.CHUNK_ROWS = old
    w16 = linear.weight.detach().half().double()
    for shape in [(1, 96), (1, 1, 96), (2, 4, 96)]:  # 1, 1 and 8 rows: the packed path
        x = torch.randn(*shape, generator=g)
        expected = (x.double() @ w16.T + linear.bias.double()).float()  # fp16 weights, exact products
        assert (linear(x) - expected).abs().max().item() < 1e-5
    long = torch.randn(1, pf.MAX_ROWS + 1, 96, generator=g)
    assert torch.equal(linear(long), F.linear(long, linear.weight, linear.bias))
    pf.unpack_module(linear)
    x = torch.randn(1, 96, generator=g)
    assert torch.equal(linear(x), F.linear(x, linear.weight, linear.bias)) and "forward" not in linear.__dict__


CHUNK = 64


def _eager_attention(q, k, v, allowed):
    """Independent reference in float64: expand the KV heads, softmax over the allowed keys."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(groups, 1), v.double().repeat_interleave(groups, 1)
    logits = (q.double() @ k.transpose(2, 3)) / q.shape[-1] ** 0.5
    probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    return (probs @ v).transpose(1, 2)  # (B, 1, H, hd)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_grouped_decode_attention_matches_an_eager_reference(dtype, tolerance):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 6, 1, 16, generator=g).to(dtype)
    k, v = (torch.randn(1, 2, 40, 16, generator=g).to(dtype) for _ in range(2))
    module = torch.nn.Module()
    allowed = torch.ones(1, 1, 1, 40, dtype=torch.bool)
    allowed[..., 7:19] = False
    per_head = torch.rand(1, 6, 1, 40, generator=g) > 0.3
    per_head[..., 0] = True
    cases = [(None, torch.ones(1, 1, 1, 40, dtype=torch.bool)), (allowed, allowed),
             (torch.zeros(1, 1, 1, 40).masked_fill(~allowed, float("-inf")), allowed), (per_head, per_head)]
    for mask, reference_mask in cases:
        out, weights = decode_attention.attend(module, q, k, v, mask)
        assert weights is None and out.dtype == dtype and out.shape == (1, 1, 6, 16)
        assert (out.double() - _eager_attention(q, k, v, reference_mask)).abs().max().item() < tolerance


def test_grouped_decode_attention_declines_what_it_does_not_do():
    q, k = torch.randn(1, 4, 2, 8), torch.randn(1, 2, 5, 8)
    module = torch.nn.Module()
    assert decode_attention.attend(module, q, k, k, None) is None  # two query rows: prefill
    q1 = q[:, :, :1]
    assert decode_attention.attend(module, q1, k, k, None, dropout=0.1) is None
    assert decode_attention.attend(module, q1, k, k, None, softcap=30.0) is None
    assert decode_attention.attend(module, q1, k, k, torch.ones(1, 1, 1, 9, dtype=torch.bool)) is None


# ---------------------------------------------------------------- packing as decoding pays for it


def test_packing_is_paid_for_by_decode_steps():
    modules = [torch.nn.Linear(32, 16), torch.nn.Linear(32, 16), torch.nn.Linear(32, 48)]
    ticks = iter(range(1000))
    path = cd.DecodePath(kernel=cd.KernelChoice("fp16", "test"), pending=list(modules), saving=0.5,
                         pack_s_per_weight=1e-3, clock=lambda: 0.25 * next(ticks))  # a packing takes 0.25 s
    # Packing a 16 x 32 block is expected to cost 0.512 s; each 0.4 s step earns 0.2 s.
    path.after_step(0.4)
    path.after_step(0.4)
    assert path.packed == [] and path.credit == pytest.approx(0.4)
    path.after_step(0.4)  # 0.6 s earned: the first module is packed, what it took is spent
    assert path.packed == modules[:1] and path.credit == pytest.approx(0.35) and path.pack_s == pytest.approx(0.25)
    assert "dycoke_fp16" in modules[0].__dict__ and "forward" in modules[0].__dict__
    assert "forward" not in modules[1].__dict__
    path.after_step(0.4)  # 0.55 s: the second
    assert path.packed == modules[:2]
    for _ in range(10):
        path.after_step(0.4)
    assert path.packed == modules and path.pending == []
    path.unpack_all()
    assert path.packed == [] and path.pending == modules and "forward" not in modules[0].__dict__


def test_the_stock_setting_packs_nothing_while_it_decodes():
    """Side-by-side measurements: decode steps of the stock setting earn no packing (they would pack
    inside the timed steps of the setting meant to show the stock kernels)."""
    modules = [torch.nn.Linear(32, 16), torch.nn.Linear(32, 16)]
    path = cd.DecodePath(kernel=cd.KernelChoice("fp16", "test"), pending=list(modules), saving=0.5,
                         pack_s_per_weight=1e-9)
    path.use_stock(True)
    for _ in range(5):
        path.after_step(10.0)
    assert path.packed == [] and path.credit == 0.0 and not any("forward" in m.__dict__ for m in modules)
    path.use_stock(False)
    assert path.packed == modules and path.pending == []
    path.use_stock(True)
    path.after_step(10.0)
    assert path.packed == [] and path.pending == modules
    path.stock = False
    path.after_step(10.0)  # the chosen way again: the step pays for both modules at once
    assert path.packed == modules


# ---------------------------------------------------------------- threads


def test_thread_tuner_tries_each_count_then_keeps_the_fastest_and_retries_rarely():
    tuner = ThreadTuner((2, 1))
    window = cpu_threads.WINDOW
    times = {2: 0.030, 1: 0.003}  # under load: two threads wait at every barrier
    picks = []
    for _ in range(2 * window + 20):
        threads = tuner.pick()
        picks.append(threads)
        tuner.record(threads, times[threads], times[threads])
    assert picks[:2 * window] == [2] * window + [1] * window  # a trial of each count
    assert picks[2 * window:] == [1] * 20  # 2 costs 0.135 s more per trial: not worth it after 0.06 s
    for _ in range(int(window * 0.027 / cpu_threads.REGRET / 0.003)):  # time enough for one more trial
        tuner.record(1, 0.003, 0.003)
    assert tuner.pick() == 2 and tuner.trial == [2] * (window - 1)


def test_thread_tuner_judges_by_the_median_of_a_trial():
    tuner = ThreadTuner((2, 1))
    for seconds in [0.001, 0.050, 0.060, 0.055, 0.048]:  # one lucky layer among slow ones
        tuner.record(tuner.pick(), seconds, seconds)
    for _ in range(cpu_threads.WINDOW):
        tuner.record(tuner.pick(), 0.004, 0.004)
    assert tuner.pick() == 1


@pytest.mark.parametrize("override, dtype, grouped, counts, phases", [
    ("auto", "bfloat16", True, (2, 1), {"decode", "prefill"}),
    ("auto", "float32", True, (2, 1), {"decode"}),
    ("auto", "float32", False, (2, 1), set()),
    ("tune", "float32", False, (2, 1), {"decode", "prefill"}),
    ("3", "float32", False, (3,), {"decode", "prefill"}),
])
def test_thread_phases_follow_what_is_invariant(override, dtype, grouped, counts, phases):
    got_counts, got_phases, line = cpu_threads.choose(override, dtype, 2, grouped)
    assert got_counts == counts and got_phases == phases and line.startswith("threads: ")
    assert cpu_threads.choose("auto", "bfloat16", 8, True)[0] == (8, 4, 2, 1)
    assert cpu_threads.choose("auto", "bfloat16", 1, True)[1] == frozenset()


def test_bf16_decode_gives_the_same_bits_with_one_thread_or_two():
    """The premise of tuning bf16: a step's result does not depend on the thread count."""
    from dycoke_cli.models import load_model
    from transformers import DynamicCache

    lm = load_model("random:tiny", device="cpu", dtype="bfloat16", quant="none")
    lm.decode.pack_all()
    ids = torch.randint(10, 200, (1, 40), generator=torch.Generator().manual_seed(0))
    logits = []
    threads = torch.get_num_threads()
    try:
        for count in (2, 1):
            for clock in lm.decode.clocks:
                clock.counts, clock.tuners = (count,), {}
            with torch.inference_mode():
                cache = DynamicCache(config=lm.model.config)
                out = lm.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
                steps = [out.logits[:, -1]]
                for _ in range(4):
                    steps.append(lm.model(input_ids=steps[-1].argmax(-1, keepdim=True), cache=cache,
                                          use_cache=True).logits[:, -1])
            logits.append(torch.stack(steps))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(logits[0], logits[1])


def test_decode_threads_hold_between_steps_and_the_process_count_returns_after(monkeypatch):
    """generate's own work between decode steps runs on the decode steps' count (under load, on the
    process's count it stalled as the layers did); a prefill, and the end of the generation, hand the
    process its own count back."""
    import numpy as np

    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.models import load_model
    from dycoke_cli.settings import Generation
    from dycoke_cli.video.frames import Frames

    threads = torch.get_num_threads()
    monkeypatch.setenv(cpu_threads.ENV, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's count: loading keeps it even for a small model
    torch.set_num_threads(2)
    try:
        lm = load_model("random:tiny", device="cpu", dtype="float32", quant="none")
        seen = []  # (rows, threads) at the start of every forward of the language model
        lm.model.get_input_embeddings().register_forward_pre_hook(
            lambda module, args: seen.append((args[0].shape[-1], torch.get_num_threads())))
        frames = Frames(pixels=np.full((2, 48, 64, 3), 120, np.uint8), timestamps=[0.0, 0.5], indices=[0, 1],
                        fps=2.0, duration=1.0)
        video = encode_frames(lm, "x", frames, 0.0, "none")
        answer = Session(lm, video, "none").ask("what?", Generation(max_new_tokens=6, min_new_tokens=6))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert len(answer.token_ids) == 6 and len(seen) == 6
    assert seen[0] == (seen[0][0], 2) and seen[0][0] > 8  # the prefill starts on the process's count
    # the first decode step starts where the prefill left off; every later one where the step before ended
    assert [count for _, count in seen[1:]] == [2, 1, 1, 1, 1]
    assert after == 2


# ---------------------------------------------------------------- the whole path


def test_explicit_dtype_is_obeyed_and_auto_packs_as_it_decodes(monkeypatch):
    from dycoke_cli.models import load_model

    monkeypatch.setattr(cd, "cached_probe", lambda: NATIVE)
    lm = load_model("random:tiny", device="cpu", dtype="float32", quant="none")
    assert lm.decode.kernel.kernel == "dtype" and lm.decode.pending == []
    assert all(p.dtype == torch.float32 for p in lm.model.parameters())
    assert not any("dycoke_fp16" in m.__dict__ for m in lm.model.modules())
    monkeypatch.setenv("DYCOKE_CPU_DTYPE", "bfloat16")
    auto = load_model("random:tiny", device="cpu", dtype="auto", quant="none")
    head = auto.model.get_output_embeddings()
    assert auto.decode.kernel.kernel == "fp16" and auto.decode.pending[-1] is head
    labels = [line.split(":")[0] for line in auto.choices]
    if auto.choices[1].startswith("threads: 1 (a language model 64 wide"):
        # random:tiny is too narrow to split across cores: loading says so, the layers have nothing to choose
        assert labels == ["dtype", "threads", "decode kernel", "decode attention"]
    else:  # OMP_NUM_THREADS set, or a process on one thread: the decode path's own line comes last
        assert labels == ["dtype", "decode kernel", "decode attention", "threads"]


def test_the_other_kind_of_processor_takes_fp32_and_the_packed_decode(monkeypatch, tmp_path):
    """No native bf16: the dtype probe says fp32, the decode probe says packed fp16 beats fp32 F.linear;
    the load follows both, and the answer equals the stock fp32 path's token for token."""
    import numpy as np

    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.models import load_model
    from dycoke_cli.settings import Generation
    from dycoke_cli.video.frames import Frames

    monkeypatch.setenv("DYCOKE_CACHE", str(tmp_path))
    monkeypatch.delenv("DYCOKE_CPU_DTYPE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # keeps the small model's count
    monkeypatch.setattr(cpu_dtype, "read_cpu", lambda: cpu_dtype.CpuInfo("Intel Xeon", frozenset(), True))
    monkeypatch.setattr(cpu_dtype, "probe", lambda *a, **k: cpu_dtype.Timing(bf16_s=0.212, fp32_s=0.041))
    monkeypatch.setattr(cd, "probe", lambda: EMULATED)
    lm = load_model("random:tiny", device="cpu", dtype="auto", quant="none")
    assert lm.dtype == "float32"
    assert lm.choices[:3] == [
        "dtype: float32 on this CPU (no avx512_bf16/amx: bf16 matmul measured 5.2x slower)",
        "decode kernel: fp16 (probe: 2.4x faster than float32 F.linear on one row; weights packed as decoding "
        f"pays for it, up to {2 * sum(m.weight.numel() for m in lm.decode.pending) / 2**20:.0f} MiB)",
        "decode attention: grouped (probe: 1.3x faster than SDPA over 2,048 cached tokens in float32)"]
    assert lm.choices[3].startswith("threads: 2 or 1 per layer, whichever ran the last timed layers fastest in "
                                    "decode steps") or torch.get_num_threads() != 2
    frames = Frames(pixels=np.full((2, 48, 64, 3), 120, np.uint8), timestamps=[0.0, 0.5], indices=[0, 1],
                    fps=2.0, duration=1.0)
    video = encode_frames(lm, "x", frames, 0.0, "none")
    generation = Generation(max_new_tokens=12, min_new_tokens=12)
    lm.decode.use_stock(False)
    packed = Session(lm, video, "none").ask("what?", generation, keep_logits=True)
    lm.decode.use_stock(True)
    stock = Session(lm, video, "none").ask("what?", generation, keep_logits=True)
    assert packed.token_ids == stock.token_ids and len(set(stock.token_ids)) > 2
    diff = (torch.stack(packed.logits) - torch.stack(stock.logits)).abs().max().item()
    scale = torch.stack(stock.logits).abs().max().item()
    # fp16 holds fp32 weights to 11 bits (2^-11 = 4.9e-4 relative): close, not identical (measured 1.9e-3)
    assert 0 < diff < 5e-3 * scale


def test_builtin_answers_equal_the_stock_fp32_path_token_for_token(tmp_path, monkeypatch):
    """The new decode path (packed fp16 linears, grouped attention, tuned threads) against the stock one
    (F.linear, SDPA, fixed threads) on held-out clips of the built-in model, in fp32."""
    from dycoke_cli import shapes
    from dycoke_cli.batch.choices import prompt
    from dycoke_cli.engine import Session, encode_video
    from dycoke_cli.models import load_model
    from dycoke_cli.settings import Generation
    from dycoke_cli.video.frames import Sampling

    monkeypatch.setenv(cd.KERNEL_ENV, "fp16")
    monkeypatch.setenv(cpu_threads.ENV, "tune")
    shapes.make(tmp_path, clips=2, seed=90210)
    records = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    lm = load_model("builtin:shapes", device="cpu", dtype="float32", quant="none")
    assert lm.decode.kernel.kernel == "fp16" and lm.decode.pending == [] and lm.decode.attention.kernel == "grouped"
    layers = lm.adapter.text_layers()

    def answers(new: bool) -> list[list[int]]:
        lm.decode.use_stock(not new)
        assert bool(layers[0].self_attn.__dict__.get("dycoke_decode_attention")) == new
        out = []
        for record in records:
            video = encode_video(lm, tmp_path / record["video"], Sampling(frames=8))
            question = prompt(record["question"], record["options"]) if record.get("options") else record["question"]
            out.append(Session(lm, video, "dycoke").ask(question, Generation(max_new_tokens=24)).token_ids)
        return out

    new, stock = answers(True), answers(False)
    assert new == stock and sum(len(ids) for ids in new) > 3 * len(records)


@pytest.mark.parametrize("method", ["none", "dycoke"])
def test_grouped_decode_attention_is_the_model_s_own_and_a_hook_s_fallback(monkeypatch, method):
    """The grouped kernel runs every decode step of every layer, with no hook and under DyCoke's DP
    (whose unpruned layers and gathered subsets fall back to the model's own attention), and the model
    is back on it after a hooked answer."""
    import numpy as np

    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.models import load_model
    from dycoke_cli.settings import Generation
    from dycoke_cli.video.frames import Frames

    monkeypatch.setenv(cd.ATTENTION_ENV, "grouped")
    lm = load_model("random:tiny", device="cpu", dtype="float32", quant="none")
    assert lm.attention == decode_attention.IMPLEMENTATION
    layers = lm.adapter.text_layers()
    calls = []
    for layer in layers:
        def counting(module, query, *args, **kwargs):
            calls.append((module.layer_idx, query.shape[2], args[0].shape[2]))
            return decode_attention.attend(module, query, *args, **kwargs)
        layer.self_attn.dycoke_decode_attention = counting
    frames = Frames(pixels=np.full((4, 48, 64, 3), 120, np.uint8), timestamps=[0.0, 0.5, 1.0, 1.5],
                    indices=[0, 1, 2, 3], fps=2.0, duration=2.0)
    video = encode_frames(lm, "x", frames, 0.0, method)
    answer = Session(lm, video, method).ask("what?", Generation(max_new_tokens=5, min_new_tokens=5))
    steps = len(answer.token_ids) - 1
    decode = [call for call in calls if call[1] == 1]
    assert len(decode) == steps * len(layers) == 4 * len(layers)
    if method == "dycoke":  # layers >= L attend to the gathered subset: fewer keys than layer 0 sees
        assert answer.stats.kv_entries_attended_mean < answer.stats.kv_entries_full
        assert decode[len(layers) - 1][2] < decode[0][2]
    calls.clear()  # after the answer, hooked or not, an unhooked one still decodes through the kernel
    plain = Session(lm, encode_frames(lm, "x", frames, 0.0, "none"), "none")
    plain.ask("what?", Generation(max_new_tokens=3, min_new_tokens=3))
    assert len([call for call in calls if call[1] == 1]) == 2 * len(layers)


def test_bad_kernel_setting_is_one_line_exit_2(clip):
    import os

    env = {**os.environ, "DYCOKE_DECODE_KERNEL": "fast"}
    out = subprocess.run([sys.executable, "-m", "dycoke_cli", "ask", str(clip), "what?", "--model", "random:tiny",
                          "--device", "cpu", "--frames", "2", "--max-new-tokens", "2"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: DYCOKE_DECODE_KERNEL='fast': expected one of auto, fp16, dtype")
    assert "Traceback" not in out.stderr


def test_verbose_prints_the_decode_choices(clip):
    out = subprocess.run([sys.executable, "-m", "dycoke_cli", "ask", str(clip), "what?", "--model", "random:tiny",
                          "--device", "cpu", "--frames", "2", "--max-new-tokens", "3", "-v"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "decode kernel: " in out.stderr and "decode attention: " in out.stderr and "threads: " in out.stderr


def test_a_weight_beyond_fp16_keeps_its_stock_kernel():
    big, small = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    with torch.no_grad():
        big.weight[0, 0] = 70000.0  # fp16's largest finite value is 65504
    path = cd.DecodePath(kernel=cd.KernelChoice("fp16", "test"), pending=[big, small])
    path.pack_all()
    assert path.packed == [small] and "forward" not in big.__dict__
    x = torch.randn(1, 8)
    assert torch.equal(big(x), F.linear(x, big.weight, big.bias))
