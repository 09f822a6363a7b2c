"""The same question with and without DyCoke, stage by stage, side by side in one run.

    python benchmarks/bench_ask.py [--model random:llava-onevision-0.5b] [--frames 8] [--device cpu]

Each setting runs the whole pipeline (decode, preprocess, vision, selection, prefill, decode) on its own,
so every figure is measured, then prints a markdown table with DyCoke's gain per row (none / dycoke for times and
counts, dycoke / none for tokens per second).
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

ROWS = [
    ("video decode (s)", "video_decode_s"), ("preprocess (s)", "preprocess_s"),
    ("vision encode (s)", "vision_encode_s"), ("selection (s)", "compress_s"), ("prefill (s)", "prefill_s"),
    ("time to first token (s)", "time_to_first_token_s"),
    ("decode (s)", "decode_s"), ("decode tokens/s", "decode_tokens_per_s"), ("total (s)", "total_s"),
    ("visual tokens", "visual_tokens_after"), ("prompt tokens", "prompt_tokens"),
    ("KV entries / decode step", "kv_entries_attended_mean"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:llava-onevision-0.5b")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quant", default="none")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()

    lm = load_model(args.model, device=args.device, dtype=args.dtype, quant=args.quant)
    clip = write_sample(Path(tempfile.mkdtemp()) / "clip.mp4")
    generation = Generation(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    # Warm-up on a short prompt so one-off allocations and kernel selection are not charged to a setting.
    Session(lm, encode_video(lm, clip, Sampling(frames=2)), parse_spec("none")).ask("warm up", Generation(4))
    results = {}
    for name, compression in [("none", parse_spec("none")), ("dycoke", parse_spec("dycoke"))]:
        video = encode_video(lm, clip, Sampling(frames=args.frames))
        results[name] = Session(lm, video, compression).ask("What happens in this video?", generation).stats.to_dict()

    print(f"model {args.model}, {args.frames} frames, {lm.device} {lm.dtype}, quant {lm.quant}, "
          f"{args.new_tokens} new tokens\n")
    print("| stage | none | dycoke | dycoke gain |")
    print("|---|---:|---:|---:|")
    for label, key in ROWS:
        a, b = results["none"][key], results["dycoke"][key]
        gain = b / a if key == "decode_tokens_per_s" else (a / b if b else 0)  # higher is better for tokens/s
        ratio = f"{gain:.2f}x" if gain else "-"
        fmt = (lambda v: f"{v:,.0f}") if "tokens" in key or "kv_" in key and "tokens_per" not in key else (
            lambda v: f"{v:,.3f}")
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")


if __name__ == "__main__":
    main()
