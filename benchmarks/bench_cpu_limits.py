"""How far each stage runs from what this CPU allows: its limits, then per stage the share reached.

    python benchmarks/bench_cpu_limits.py [--models random:llava-onevision-0.5b,random:qwen3-vl-2b,builtin:shapes]
                                          [--frames 2] [--new-tokens 32] [--rounds 2] [--json out.json]

Limits, measured first: the streaming-read bandwidth (the fastest of several passes of `amax` over a
1 GiB fp32 tensor, which reads every byte once and computes almost nothing) and the matrix-product
peak in fp32 and bf16 (a 3072^3 product, best of 3), each the most reached on any thread count the
process could use (all cores, halved down to one: on a loaded machine fewer threads can reach more).

Then per model, loaded as `--dtype auto` loads it, on `--frames` synthetic 360x640 frames (no video
decoding), `-c none`, `--new-tokens` greedy tokens, two settings interleaved in one process for
`--rounds` rounds (the best round of each is kept; every round is in the JSON):
- `before`: the stock path, what `--dtype auto` ran before the CPU decode path existed: F.linear in the
  model's dtype, SDPA, the process's thread count in every layer;
- `after`: the path `--dtype auto` chooses now (models/cpu_decode.py, cpu_threads.py), packed
  beforehand (the steady state; a fresh process packs as decoding pays for it).
Per stage: the vision tower and the prefill in GFLOP/s (FLOPs counted by torch's FlopCounterMode on
the stock path) and as a share of the matrix-product peak of the model's dtype; decode in GB/s (the
weights of the language model's linears at the bytes the path reads, 2 for bf16 and packed fp16, 4
for fp32, plus the KV cache) and as a share of the streaming bandwidth, with the tokens/s that
bandwidth allows. The header names the processor, its flags and the load average before and after.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_dtype import cpu_facts, synthetic  # noqa: E402

GB = 1e9


def best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def limits() -> dict:
    """Streaming-read bandwidth (bytes/s) and fp32/bf16 matrix-product peaks (FLOP/s): the most this process
    reaches on any thread count it could use (on a loaded machine fewer threads can reach more)."""
    import torch

    from dycoke_cli.models.cpu_threads import thread_counts

    threads = torch.get_num_threads()
    out: dict = {}
    n = 3072
    try:
        with torch.inference_mode():
            big = torch.ones(2**28)  # 1 GiB of fp32
            mats = {dtype: torch.randn(n, n).to(getattr(torch, dtype)) for dtype in ("float32", "bfloat16")}
            for count in thread_counts(threads):
                torch.set_num_threads(count)
                found = {"bandwidth": big.numel() * 4 / best_of(big.amax, 5)}
                for dtype, a in mats.items():
                    found[f"peak {dtype}"] = 2 * n**3 / best_of(lambda: a @ a, 3)
                for key, value in found.items():
                    if value > out.get(key, 0.0):
                        out[key], out[f"{key} threads"] = value, count
    finally:
        torch.set_num_threads(threads)
    return out


def unreachable_eos(model) -> int:
    """A token id the output head cannot produce (its row count): generations stopped by it run exactly
    max_new_tokens steps without `min_new_tokens`, whose per-step masking of the whole vocabulary
    (three passes over 150k entries) users never run and which cost 50-100 ms a step under load."""
    return model.get_output_embeddings().weight.shape[0]


def flops(fn) -> int:
    """FLOPs of the matrix products and attention that `fn` runs (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def decode_bytes(lm, prompt_tokens: int, new_tokens: int, packed: bool) -> float:
    """Bytes one decode step reads: every linear weight of the language model (2 bytes where packed fp16
    or bf16, the dtype's size otherwise) and the K/V cache at its mean length over the answer."""
    from dycoke_cli.models.cpu_decode import linear_modules

    layers = lm.adapter.text_layers()
    weights = 0
    for module in linear_modules(lm.model, layers):
        size = 2 if packed and "dycoke_fp16" in module.__dict__ else module.weight.element_size()
        weights += module.weight.numel() * size
    config = lm.adapter.text_config
    kv_heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(lm.model.parameters()).element_size()
    cache = 2 * len(layers) * kv_heads * head_dim * element * (prompt_tokens + new_tokens / 2)
    return weights + cache


def measure(spec: str, frames: int, new_tokens: int, rounds: int, machine: dict) -> list[dict]:
    import torch

    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.models import load_model
    from dycoke_cli.settings import Generation

    lm = load_model(spec, device="cpu", dtype="auto", quant="none")
    path = lm.decode
    print(f"\n{spec}: {lm.dtype}; " + "; ".join(lm.choices[1:]), flush=True)
    clip = synthetic(frames)
    path.use_stock(True)
    with torch.inference_mode():
        vision_flops = flops(lambda: encode_frames(lm, "synthetic", clip, 0.0, "none"))
        video = encode_frames(lm, "synthetic", clip, 0.0, "none")
        prefill_flops = flops(lambda: Session(lm, video, "none").ask("What happens in this video?",
                                                                      Generation(max_new_tokens=1)))
    peak = machine[f"peak {lm.dtype}"] if f"peak {lm.dtype}" in machine else machine["peak float32"]
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    lm.model.generation_config.eos_token_id = unreachable_eos(lm.model)  # answers of exactly new_tokens
    generation = Generation(max_new_tokens=new_tokens)
    for _ in range(rounds):
        for setting in runs:
            path.use_stock(setting == "before")
            video = encode_frames(lm, "synthetic", clip, 0.0, "none")
            stats = Session(lm, video, "none").ask("What happens in this video?", generation).stats
            step_bytes = decode_bytes(lm, stats.prompt_tokens, new_tokens, setting == "after")
            runs[setting].append({
                "vision_s": stats.video.vision_encode_s, "prefill_s": stats.prefill_s,
                "ttft_s": stats.time_to_first_token_s, "decode_tokens_per_s": stats.decode_tokens_per_s,
                "prompt_tokens": stats.prompt_tokens, "step_bytes": step_bytes, "load": os.getloadavg()[0]})
    rows = []
    for setting, results in runs.items():
        best = {key: min(r[key] for r in results) for key in ("vision_s", "prefill_s", "ttft_s")}
        best["decode_tokens_per_s"] = max(r["decode_tokens_per_s"] for r in results)
        step_bytes = results[0]["step_bytes"]
        rows.append({"model": spec, "dtype": lm.dtype, "setting": setting, **best, "runs": results,
                     "frames": frames, "prompt_tokens": results[0]["prompt_tokens"],
                     "vision_gflops": vision_flops / GB, "prefill_gflops": prefill_flops / GB,
                     "vision_share": vision_flops / best["vision_s"] / peak,
                     "prefill_share": prefill_flops / best["prefill_s"] / peak,
                     "decode_gb_per_s": best["decode_tokens_per_s"] * step_bytes / GB,
                     "decode_share": best["decode_tokens_per_s"] * step_bytes / machine["bandwidth"],
                     "bound_tokens_per_s": machine["bandwidth"] / step_bytes, "step_gb": step_bytes / GB})
    del lm, path, video
    gc.collect()
    return rows


def table(rows: list[dict], machine: dict) -> str:
    lines = ["| model (dtype, frames, prompt) | setting | vision s | GFLOP/s | % peak | prefill s | GFLOP/s | % peak "
             "| TTFT s | decode tok/s | GB/s | % bandwidth | bound tok/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['dtype']}, {r['frames']}, {r['prompt_tokens']:,}) | {r['setting']} "
            f"| {r['vision_s']:.2f} | {r['vision_gflops'] / r['vision_s']:.3g} | {r['vision_share']:.0%} "
            f"| {r['prefill_s']:.2f} | {r['prefill_gflops'] / r['prefill_s']:.3g} | {r['prefill_share']:.0%} "
            f"| {r['ttft_s']:.2f} | {r['decode_tokens_per_s']:.1f} | {r['decode_gb_per_s']:.1f} "
            f"| {r['decode_share']:.0%} | {r['bound_tokens_per_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="random:llava-onevision-0.5b,random:qwen3-vl-2b,builtin:shapes")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    print(f"{cpu_facts()}; {torch.get_num_threads()} threads; torch {torch.__version__}", flush=True)
    machine = limits()
    print(f"limits: streaming read {machine['bandwidth'] / GB:.1f} GB/s ({machine['bandwidth threads']} threads); "
          f"matrix-product peak {machine['peak float32'] / GB:.0f} GFLOP/s fp32 "
          f"({machine['peak float32 threads']} threads), {machine['peak bfloat16'] / GB:.0f} GFLOP/s bf16 "
          f"({machine['peak bfloat16 threads']} threads)", flush=True)
    rows = []
    for spec in args.models.split(","):
        rows += measure(spec, args.frames, args.new_tokens, args.rounds, machine)
    print()
    print(table(rows, machine))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average after the run: {load}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "facts": cpu_facts(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
