"""What decode-time KV pruning (DP) costs per decode step on the CPU, at long prompts.

    python benchmarks/bench_dp_overhead.py [--model random:llava-onevision-0.5b] [--prompts 1600,6000]
                                           [--new-tokens 16] [--rounds 3]

The language model of `--model` (loaded as `--dtype auto` loads it, the decode kernel packed first so
every configuration runs the same kernels) generates `--new-tokens` greedy tokens after a prompt of
P tokens whose positions 14 .. P-20 count as video for DP; the prompt's cache is computed once per
length and copied for each run. Per length, interleaved over `--rounds` rounds (best round kept):
- `none`: no attention hook (`-c none`, and `-c dycoke:p=0`, whose DP is off, runs exactly this);
- `dp p=0`: DyCoke's pruner installed with p = 0: the dispatch through the registered attention
  function and the pruner's bookkeeping, nothing pruned;
- `dp p=0.7`: DyCoke's default DP (scoring at layer L-1 = 2, top 30% of the video entries kept by
  layers >= 3, reuse gate).
"DP's own work" is the time inside the pruner's attend() minus the SDPA it calls, per decode step:
scoring at layer L-1, the gate, the gather index, the K/V gathers. The table names the processor, its
flags and the load average.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_dtype import cpu_facts  # noqa: E402
from bench_cpu_limits import unreachable_eos  # noqa: E402
from bench_decode_profile import prompt_ids  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:llava-onevision-0.5b")
    parser.add_argument("--prompts", default="1600,6000")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import DynamicCache

    from dycoke_cli.compress.attention import HookContext
    from dycoke_cli.compress.dp import DecodePruner, DPConfig
    from dycoke_cli.models import load_model

    lm = load_model(args.model, device="cpu", dtype="auto", quant="none")
    if lm.decode is not None:
        lm.decode.pack_all()
    model = lm.model
    hook_s = [0.0]

    print(f"{cpu_facts()}\nmodel {args.model}, {lm.dtype}, {'; '.join(lm.choices)}\n")
    print("| prompt tokens | setting | decode step (ms) | vs none | DP's own work per step (ms) | share of a step |")
    print("|---:|---|---:|---:|---:|---:|")
    for length in [int(p) for p in args.prompts.split(",")]:
        ids = prompt_ids(lm, length)
        visual = torch.arange(14, length - 20)
        with torch.inference_mode():
            base = DynamicCache(config=model.config)
            model(input_ids=ids[:, :-2], cache=base, use_cache=True, logits_to_keep=1)
        settings = {"none": None, "dp p=0": DPConfig(p=0.0), "dp p=0.7": DPConfig(p=0.7)}
        best = {name: (float("inf"), 0.0) for name in settings}
        for _ in range(args.rounds):
            for name, config in settings.items():
                hook = None if config is None else DecodePruner(config, HookContext(visual, length))
                step_s, own_s = run(lm, ids, base, hook, args.new_tokens, hook_s)
                if step_s < best[name][0]:
                    best[name] = (step_s, own_s)
        for name, (step_s, own_s) in best.items():
            print(f"| {length:,} | {name} | {step_s * 1e3:.1f} | {step_s / best['none'][0]:.3f} | "
                  f"{own_s * 1e3:.2f} | {own_s / step_s:.1%} |", flush=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average after the run: {load}")


def run(lm, ids, base, hook, new_tokens, hook_s):
    """(seconds per decode step, seconds of the pruner's own work per step) of one greedy generation,
    run as the engine runs it (the method's hook active, the decode path's generation context)."""
    import torch

    from transformers import LogitsProcessor, LogitsProcessorList

    class Clock(LogitsProcessor):  # the time of each token's arrival
        def __init__(self):
            self.at = []

        def __call__(self, input_ids, scores):
            self.at.append(time.perf_counter())
            return scores

    from dycoke_cli.compress import dp as dp_module
    from dycoke_cli.compress.attention import active

    model, layers = lm.model, lm.adapter.text_layers()
    stock_attention = dp_module.plain
    if hook is not None:  # the pruner's own work: its attend() minus the SDPA it calls, decode steps only
        attend = hook.attend

        def timed_attend(module, query, *a, **k):
            if query.shape[2] != 1:
                return attend(module, query, *a, **k)
            start = time.perf_counter()
            try:
                return attend(module, query, *a, **k)
            finally:
                hook_s[0] += time.perf_counter() - start

        def untimed_attention(module, query, *a, **k):
            start = time.perf_counter()
            try:
                return stock_attention(module, query, *a, **k)
            finally:
                if query.shape[2] == 1:
                    hook_s[0] -= time.perf_counter() - start

        hook.attend = timed_attend
        dp_module.plain = untimed_attention
    clock, hook_s[0] = Clock(), 0.0
    try:
        with torch.inference_mode(), active(model, layers, hook, lm.attention), lm.generating():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=copy.deepcopy(base),
                           max_new_tokens=new_tokens, eos_token_id=unreachable_eos(model), do_sample=False,
                           logits_processor=LogitsProcessorList([clock]), pad_token_id=0)
    finally:
        dp_module.plain = stock_attention
    steps = len(clock.at) - 1
    return (clock.at[-1] - clock.at[0]) / steps, hook_s[0] / max(1, steps)


if __name__ == "__main__":
    main()
