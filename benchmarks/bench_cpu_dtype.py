"""Which dtype is fastest on this CPU: bf16, fp32 and a split, side by side in one run.

    python benchmarks/bench_cpu_dtype.py [--model random:llava-onevision-0.5b] [--frames 8] [--new-tokens 16]
                                         [--configs bfloat16,float32,split,auto] [--method dycoke] [--repeat 2]

Each configuration runs in a fresh process (so peak RSS is its own): load, a 2-frame warm-up, then
one whole `ask` on `--frames` synthetic frames (decoded frames in hand: video decoding is not part of
any figure). With --repeat N the configurations run round-robin N times and each row is its best
round (lowest time to first token), with every round's figure beside it: on a shared machine the
spread is part of the result. `split` is the vision tower and projector in float32 with the language model in
bfloat16; `auto` is whatever `--dtype auto` picks on this machine (see dycoke_cli/models/cpu_dtype.py).
The header names the processor, its bf16 flags and the load average, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from dycoke_cli.engine import Session, encode_frames
from dycoke_cli.models import load_model
from dycoke_cli.models.cpu_dtype import cast_vision
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation

model, frames, config, method, tokens, here = sys.argv[1:7]
sys.path.insert(0, here)
from bench_cpu_dtype import synthetic

dtype = "bfloat16" if config == "split" else config
lm = load_model(model, device="cpu", dtype=dtype, quant="none")
if config == "split":
    cast_vision(lm.model, "float32")
spec = parse_spec(method)
Session(lm, encode_frames(lm, "warmup", synthetic(2), 0.0, spec), spec).ask("warm up", Generation(4, 4))
video = encode_frames(lm, "synthetic", synthetic(int(frames)), 0.0, spec)
n = int(tokens)
stats = Session(lm, video, spec).ask("What happens in this video?", Generation(n, n)).stats.to_dict()
stats["chosen"] = lm.dtype
stats["choices"] = lm.choices
print(json.dumps(stats))
"""


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a benchmark that runs one model on a clip (the CPU benchmarks share them)."""
    parser.add_argument("--model", default="random:llava-onevision-0.5b")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)


def synthetic(n: int, size: tuple[int, int] = (360, 640)):
    """n decoded frames of a bar moving over a changing colour, with their timestamps (no video file)."""
    import numpy as np

    from dycoke_cli.video.frames import Frames

    h, w = size
    pixels = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        pixels[i] = (40 + 20 * i % 160, 90, 160 - 15 * i % 120)
        x = int(i / max(1, n) * (w - 60))
        pixels[i, h // 3: 2 * h // 3, x:x + 60] = 250
    return Frames(pixels=pixels, timestamps=[i * 10.0 / n for i in range(n)], indices=list(range(n)),
                  fps=30.0, duration=10.0)


def cpu_facts() -> str:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine()):
                name = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "bf16"]
    present = [f for f in wanted if f in flags]
    absent = [f for f in wanted if f not in flags and f != "bf16"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"CPU {name}, {os.cpu_count()} cores; flags present: {' '.join(present) or 'none'}; "
            f"absent: {' '.join(absent) or 'none'}; load average {load}")


def main() -> None:
    parser = argparse.ArgumentParser()
    model_arguments(parser)
    parser.add_argument("--configs", default="bfloat16,float32,split,auto")
    parser.add_argument("--method", default="dycoke", help="compression spec (default dycoke, the CLI default)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over the configurations (round-robin); each row is its best round")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    configs = args.configs.split(",")
    print(f"model {args.model}, {args.frames} frames, --compress {args.method}, {args.new_tokens} new tokens, "
          f"CPU, each configuration in a fresh process, {args.repeat} round(s), best round per row\n"
          f"{cpu_facts()}\n", flush=True)
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    failures: dict[str, str] = {}
    for round_ in range(1, args.repeat + 1):
        for config in configs:
            out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.frames), config, args.method,
                                  str(args.new_tokens), str(Path(__file__).resolve().parent)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                failures[config] = (out.stderr.strip().splitlines() or ["?"])[-1]
                print(f"round {round_} {config}: failed: {failures[config]}", flush=True)
                continue
            s = json.loads(out.stdout.strip().splitlines()[-1])
            s["load_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            runs[config].append(s)
            print(f"round {round_} {config}: TTFT {s['time_to_first_token_s']:.2f} s (vision "
                  f"{s['vision_encode_s']:.2f}, prefill {s['prefill_s']:.2f}), decode {s['decode_tokens_per_s']:.1f} "
                  f"tok/s, load {s['load_at_end']:.2f}", flush=True)

    print("\n| dtype | vision encode (s) | prefill (s) | time to first token (s) | decode tokens/s | total (s) "
          "| peak RSS (GiB) | TTFT vs bfloat16 | TTFT of every round (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    best = {c: min(r, key=lambda s: s["time_to_first_token_s"]) for c, r in runs.items() if r}
    base = best.get("bfloat16", {}).get("time_to_first_token_s")
    for config in configs:
        if config not in best:
            print(f"| {config} | failed: {failures.get(config, '?')} ||||||||")
            continue
        s = best[config]
        ttft = s["time_to_first_token_s"]
        label = f"auto ({s['chosen']})" if config == "auto" else config
        ratio = f"{base / ttft:.2f}x" if base else "-"
        every = ", ".join(f"{r['time_to_first_token_s']:.1f}" for r in runs[config])
        print(f"| {label} | {s['vision_encode_s']:.2f} | {s['prefill_s']:.2f} | {ttft:.2f} | "
              f"{s['decode_tokens_per_s']:.1f} | {s['total_s']:.2f} | {s['peak_rss_bytes'] / 2**30:.2f} | {ratio} | "
              f"{every} |")
    print(f"\nafter the run: {cpu_facts().split('; ')[-1]}")
    for line in best.get("auto", {}).get("choices") or []:
        print(f"-v with --dtype auto: {line}")


if __name__ == "__main__":
    main()
