"""Five questions about one video, with and without reusing the [prefix + video] KV cache.

    python benchmarks/bench_followups.py [--model random:llava-onevision-0.5b] [--frames 8]

The video is encoded once and shared by both runs (reuse changes only the language-model work);
each run answers the same five questions in order. Prints each question's prefill (the video is
already encoded, so this is the language model's part of the time to first token), its share of
the first question's, and the total.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from dycoke_cli.engine import Session, encode_video
from dycoke_cli.models import load_model
from dycoke_cli.sample_clip import write_sample
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling

QUESTIONS = [
    "What happens in this video?",
    "What colour is the moving bar?",
    "Does the background change over time?",
    "In which direction does the bar move?",
    "Summarise the video in one sentence.",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:llava-onevision-0.5b")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quant", default="auto")
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()

    lm = load_model(args.model, device=args.device, quant=args.quant)
    clip = write_sample(Path(tempfile.mkdtemp()) / "clip.mp4")
    video = encode_video(lm, clip, Sampling(frames=args.frames))
    generation = Generation(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    Session(lm, video, parse_spec("dycoke"), reuse_prefix=False).ask("warm up", Generation(4))
    runs = {}
    for reuse in (False, True):
        session = Session(lm, video, parse_spec("dycoke"), reuse_prefix=reuse)
        runs[reuse] = [session.ask(q, generation).stats for q in QUESTIONS]

    print(f"model {args.model}, {args.frames} frames, {lm.device} {lm.dtype}, quant {lm.quant}, DyCoke defaults, "
          f"{args.new_tokens} new tokens; video encoded once ({video.stats.vision_encode_s:.2f} s vision)\n")
    print("| question | prefilled tokens (no reuse) | prefill no reuse (s) | prefilled tokens (reuse) "
          "| prefill reuse (s) | prefill reuse / first question's |")
    print("|---|---:|---:|---:|---:|---:|")
    first = runs[True][0].prefill_s
    for i, (plain, reused) in enumerate(zip(runs[False], runs[True]), 1):
        print(f"| {i} | {plain.prefill_tokens:,} | {plain.prefill_s:.3f} | {reused.prefill_tokens:,} | "
              f"{reused.prefill_s:.3f} | {100 * reused.prefill_s / first:.1f}% |")
    totals = {k: sum(s.prefill_s + s.decode_s for s in v) for k, v in runs.items()}
    print(f"\nlanguage-model time for all five: {totals[False]:.2f} s without reuse, {totals[True]:.2f} s with "
          f"reuse ({totals[False] / totals[True]:.2f}x)")


if __name__ == "__main__":
    main()
