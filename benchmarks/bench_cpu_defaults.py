"""Which dtype and quantization to default to on the CPU: one full `ask` per configuration.

    python benchmarks/bench_cpu_defaults.py [--model random:llava-onevision-0.5b] [--frames 8]

Each configuration runs in a fresh subprocess (so peak RSS is its own) with DyCoke defaults, after a
short warm-up; the table gives the stages that the configuration changes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = [("bfloat16", "none"), ("float32", "none"), ("bfloat16", "4bit"), ("bfloat16", "8bit")]

CHILD = """
import json, sys
from dycoke_cli.engine import Session, encode_video
from dycoke_cli.models import load_model
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling
model, clip, frames, dtype, quant, tokens = sys.argv[1:7]
lm = load_model(model, device="cpu", dtype=dtype, quant=quant)
Session(lm, encode_video(lm, clip, Sampling(frames=2)), parse_spec("dycoke")).ask("warm up", Generation(4))
video = encode_video(lm, clip, Sampling(frames=int(frames)))
n = int(tokens)
stats = Session(lm, video, parse_spec("dycoke")).ask("What happens in this video?", Generation(n, n)).stats
print(json.dumps(stats.to_dict()))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:llava-onevision-0.5b")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    from dycoke_cli.sample_clip import write_sample

    clip = write_sample(Path(tempfile.mkdtemp()) / "clip.mp4")
    print(f"model {args.model}, {args.frames} frames, DyCoke defaults, {args.new_tokens} new tokens, CPU\n")
    print("| dtype | quant | vision encode (s) | prefill = TTFT (s) | decode tokens/s | total (s) | peak RSS (GiB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for dtype, quant in CONFIGS:
        out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(clip), str(args.frames), dtype, quant,
                              str(args.new_tokens)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {dtype} | {quant} | failed: {out.stderr.strip().splitlines()[-1]} |||||")
            continue
        s = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {dtype} | {quant} | {s['vision_encode_s']:.2f} | {s['prefill_s']:.2f} | "
              f"{s['decode_tokens_per_s']:.1f} | {s['total_s']:.2f} | {s['peak_rss_bytes'] / 2**30:.2f} |", flush=True)


if __name__ == "__main__":
    main()
