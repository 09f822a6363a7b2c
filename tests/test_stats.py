"""Every figure an answer reports says what it measures: KV means set against means over the same decode
steps, FastV's kept tokens where it keeps them (after layer K), the reuse saving as an estimate, a
steady-state decode rate with the first step apart, and why generation ended."""

from __future__ import annotations

import pytest

from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.engine import Session, encode_video, finish_reason
from dycoke_cli.render.answer import stats_rows
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling

SIX = Generation(max_new_tokens=6, min_new_tokens=6)


@pytest.fixture(scope="module")
def video(tiny, clip):
    return encode_video(tiny, clip, Sampling(frames=4))


def rows(stats) -> dict:
    return dict(stats_rows(stats.to_dict()))


def test_without_pruning_the_attended_mean_equals_the_cached_mean_over_the_same_steps(tiny, video):
    stats = Session(tiny, video, "none").ask("What happens?", SIX).stats
    d = stats.to_dict()
    # decode step i (1..5) attends to the whole cache: prompt + i entries
    expected = sum(d["prompt_tokens"] + i for i in range(1, 6)) / 5
    assert d["decode_steps"] == 5
    assert d["kv_entries_attended_mean"] == d["kv_entries_full_mean"] == expected
    assert d["kv_entries_full"] == d["prompt_tokens"] + 5  # the length at the last step, kept as it was
    assert rows(stats)["KV per step"] == f"{expected:,.1f} attended of {expected:,.1f} cached (means over 5 decode steps)"


def test_fastv_reports_the_tokens_it_keeps_after_layer_k(tiny, video):
    stats = Session(tiny, video, parse_spec("fastv:layer=2,rate=0.5")).ask("What happens?", SIX).stats
    d = stats.to_dict()
    visual = 4 * 196
    assert (d["visual_tokens_after"], d["visual_tokens_kept"], d["visual_tokens_kept_from_layer"]) == (
        visual, visual // 2, 2)
    assert d["visual_tokens_kept_pct"] == 50.0
    assert d["compression"]["counters"]["fastv_visual_kept"] == visual // 2  # the method's own counter agrees
    assert rows(stats)["visual tokens"] == "784 -> 784 at input, 392 from layer 2 (50.0% kept)"
    # the layers >= K attend to the shrunk cache: every text token, the kept visual ones, the generated ones
    text = d["prompt_tokens"] - visual
    assert d["kv_entries_attended_mean"] == sum(text + visual // 2 + i for i in range(1, 6)) / 5


def test_profile_places_fastv_at_its_kept_tokens(tiny, video):
    from dycoke_cli.profile.flops import LMDims
    from dycoke_cli.profile.report import add_ratios, summarize
    from dycoke_cli.render.profile import rows as profile_rows

    entries = []
    for label in ("none", "fastv"):
        answer = Session(tiny, video, parse_spec(label)).ask("What happens?", SIX)
        entries.append(summarize(label, [answer.stats.to_dict()], [(answer.text, answer.token_ids)],
                                 LMDims.from_config(tiny.adapter.text_config)))
    add_ratios(entries)
    for entry in entries:
        entry["agreement"] = None
    assert [row[1] for row in profile_rows({"settings": entries})] == ["784", "392"]
    assert entries[1]["ratios"]["visual_tokens"] == 0.5


def test_decode_rate_is_steady_state_with_the_first_step_apart(tiny, video):
    stats = Session(tiny, video, "dycoke").ask("What happens?", SIX).stats
    d = stats.to_dict()
    assert 0 < d["first_decode_step_s"] < d["decode_s"]
    assert d["decode_tokens_per_s"] == (6 - 2) / (d["decode_s"] - d["first_decode_step_s"])
    assert rows(stats)["decode"] == (f"6 tokens in {_seconds(d['decode_s'])}, {d['decode_tokens_per_s']:.1f} "
                                     f"tokens/s after the first step ({_seconds(d['first_decode_step_s'])})")


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def test_a_follow_up_labels_its_saving_an_estimate(tiny, video):
    session = Session(tiny, video, "dycoke")
    first = session.ask("What happens?", SIX).stats
    second = session.ask("And then?", SIX).stats
    assert second.prefix_reused_tokens > 0
    table = rows(second)
    assert table["prompt"] == f"{second.prompt_tokens:,} tokens ({second.prefix_reused_tokens:,} reused from cache)"
    assert table["reuse"].endswith("of prefill saved (estimated at the last full prefill's rate)")
    assert second.prefill_saved_s == second.prefix_reused_tokens / first.prompt_tokens * first.prefill_s


def test_finish_reason_says_whether_the_answer_was_cut(tiny, video):
    cut = Session(tiny, video, "none").ask("What happens?", SIX).stats  # end-of-sequence suppressed: cut at 6
    assert cut.to_dict()["finish_reason"] == "length"
    assert rows(cut)["finish"] == "length (cut at --max-new-tokens 6)"
    eos = tiny.adapter.eos_token_ids
    assert finish_reason([5, 6, eos[0]], eos, 3) == "stop"  # the end token itself, even at the limit
    assert finish_reason([5, 6], eos, 3) == "stop"  # ended before the limit
    assert finish_reason([5, 6, 7], eos, 3) == "length"


def test_a_small_model_runs_on_one_thread_unless_omp_num_threads_says_otherwise(tiny):
    """A fresh process (the thread count is process-wide): random:tiny's language model is 64 wide."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom dycoke_cli import load_model\nbefore = torch.get_num_threads()\n"
            "lm = load_model('random:tiny', device='cpu', dtype='float32', quant='none')\n"
            "print(before, torch.get_num_threads(), [c for c in lm.choices if c.startswith('threads')])\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    for given, expected in ((None, "1"), ("2", "2")):
        if given:
            env["OMP_NUM_THREADS"] = given
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        before, after, notes = out.stdout.split(" ", 2)
        assert after == expected, out.stderr
        if given is None and before != "1":  # a one-core machine has nothing to say
            assert notes.strip() == ("['threads: 1 (a language model 64 wide: too small to split across cores; "
                                     "OMP_NUM_THREADS overrides)']")


def test_a_wide_model_gets_torch_s_own_thread_count_back(monkeypatch):
    import torch

    from dycoke_cli.models import loading

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(loading, "_default_threads", [2])
    start = torch.get_num_threads()
    try:
        wide = type("Adapter", (), {"text_config": type("Config", (), {"hidden_size": 896})()})()
        loading.choose_threads(wide, "cpu")
        assert torch.get_num_threads() == 2
        narrow = type("Adapter", (), {"text_config": type("Config", (), {"hidden_size": 64})()})()
        loading.choose_threads(narrow, "cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(start)


def test_peak_rss_is_the_process_own_not_its_parents(tmp_path):
    """A dycoke process started by a large one reports its own peak: getrusage's ru_maxrss keeps the
    parent's RSS at fork (the premise, checked too), VmHWM does not."""
    import subprocess
    import sys

    child = ("import resource\nfrom dycoke_cli.stats import peak_rss_bytes\n"
             "print(peak_rss_bytes() // 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
    parent = ("import subprocess, sys\nbig = bytearray(400 * 2**20)\n"
              "for i in range(0, len(big), 4096):\n    big[i] = 1\n"
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True).stdout)")
    ours, inherited = map(int, subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                                              timeout=60).stdout.split())
    assert inherited >= 400  # the premise: the child's ru_maxrss carries the parent's 400 MiB
    assert ours < 200
