"""Peak memory of encoding a long video against its frame count: chunked (what the tool does) and all
frames at once (decoded frames held together, the tower run on all of them), side by side.

    python benchmarks/bench_memory.py [--frames 64,256,768] [--model random:tiny-qwen2.5-vl] [--size 1280x720]

Each variant runs in a fresh process (peak RSS is a process's high-water mark) on one synthetic clip
of `max(frames)` frames at `--size`, sampled with --frames N, through the tool's own plan and encode
path; the "at once" variant only raises the engine's chunk sizes (decoding and the tower) past the
frame count. The tiny Qwen2.5-VL
spec keeps the tower cheap while the frames, preprocessing and features have their real sizes: enough
for the shape of the curve (a real tower's activations add a per-chunk amount, not a per-video one).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from dycoke_cli import engine
from dycoke_cli.models import load_model
from dycoke_cli.plan import plan_video
from dycoke_cli.video import SamplingRequest, probe_video

model, clip, frames, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if chunk:  # 0: the engine's own chunk sizes
    engine.DECODE_FRAMES = engine.CHUNK_FRAMES = chunk
lm = load_model(model, device="cpu", dtype="float32", quant="none")
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = plan_video(probe_video(clip), SamplingRequest(frames=frames), "none", lm.adapter)
started = time.perf_counter()
video = engine.encode(lm, plan)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "baseline_kib": baseline,
                  "seconds": time.perf_counter() - started, "frames": video.stats.frames,
                  "tokens": int(video.features.tokens.shape[0] * video.features.tokens.shape[1])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", default="64,256,768")
    parser.add_argument("--model", default="random:tiny-qwen2.5-vl")
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args()
    counts = [int(n) for n in args.frames.split(",")]
    size = tuple(int(x) for x in args.size.split("x"))
    from dycoke_cli.sample_clip import write_sample

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_sample(Path(tmp) / "long.mp4", seconds=max(counts) / 30, size=size)
        print(f"model {args.model}, clip {size[0]}x{size[1]}, {max(counts)} frames at 30 fps, float32, CPU; "
              f"peak RSS growth = peak RSS after encoding - RSS after loading the model\n")
        print("| frames | visual tokens | chunked: peak RSS growth (MiB) | at once: peak RSS growth (MiB) | "
              "chunked: encode (s) | at once: encode (s) |")
        print("|---:|---:|---:|---:|---:|---:|")
        for count in counts:
            row = {}
            for name, chunk in (("chunked", 0), ("once", 10**6)):
                out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(clip), str(count), str(chunk)],
                                     capture_output=True, text=True, check=True, env={**os.environ})
                row[name] = json.loads(out.stdout.strip().splitlines()[-1])
            growth = {k: (v["peak_kib"] - v["baseline_kib"]) / 1024 for k, v in row.items()}
            print(f"| {count} | {row['chunked']['tokens']:,} | {growth['chunked']:.0f} | {growth['once']:.0f} | "
                  f"{row['chunked']['seconds']:.1f} | {row['once']['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
