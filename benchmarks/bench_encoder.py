"""Selections inside the vision tower against none and against post-encoder compression, side by side.

    python benchmarks/bench_encoder.py [--part llava|qwen|all] [--repeats 1] [--frames 8]

Each part loads one random-weight model at real shapes and runs `dycoke profile`'s own rounds (a
warm-up, then --repeats measured rounds; settings interleaved, so the machine's drift spreads over all
of them) on a synthetic clip, then prints a markdown table: visual tokens kept, the tower's time and
its achieved GFLOP/s (its FLOPs as `profile` counts them, over its measured time) against this
processor's matmul peak in the model's dtype (the fastest of a few square and ViT-shaped products,
measured here, at the start), prefill, time to first token and its ratio to `none`.

Parts: `llava` (random:llava-onevision-0.5b: DyCoke's default retention, 47.5%, and budget 0.25, each
before prefill and inside the tower), `qwen` (random:qwen3-vl-2b at budget 0.25). The lscpu flags and
the load average are printed with the table; ratios come from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RETAINED = "0.525"  # the drop rate that keeps DyCoke's default share (47.5%) with a rate-based method
PARTS = {
    "llava": ("random:llava-onevision-0.5b", [
        "none", "dycoke", "dycoke:stage=encoder,encoder_layer=1", "dycoke:stage=encoder,encoder_layer=4",
        "dycoke:stage=encoder,encoder_layer=8", f"evs:stage=encoder,encoder_layer=1,rate={RETAINED}",
        f"earlytom:encoder_layer=1,rate={RETAINED}",
        "dycoke:budget=0.25", "evs:budget=0.25", "dycoke:stage=encoder,encoder_layer=1,budget=0.25",
        "evs:stage=encoder,encoder_layer=1,budget=0.25", "earlytom:encoder_layer=1,budget=0.25",
    ]),
    "qwen": ("random:qwen3-vl-2b", [
        "none", "evs:budget=0.25", "dycoke:budget=0.25", "evs:stage=encoder,encoder_layer=1,budget=0.25",
        "dycoke:stage=encoder,encoder_layer=1,budget=0.25", "evs:stage=encoder,encoder_layer=4,budget=0.25",
    ]),
}


# (m, k, n) products the peak is taken over: square ones and the tall ones a ViT's layers are made of
# (tokens x hidden by hidden x MLP width); one size alone can sit far below what the kernels reach.
PEAK_SHAPES = ((2048, 2048, 2048), (4096, 4096, 4096), (8192, 1152, 4304), (8192, 1280, 5120))


def matmul_peak(dtype, repeats: int = 3) -> float:
    """GFLOP/s of the fastest (m x k) @ (k x n) product in `dtype` over PEAK_SHAPES, best of `repeats` each."""
    import torch

    best = 0.0
    for m, k, n in PEAK_SHAPES:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        a @ b  # warm-up: kernel choice, packing buffers
        seconds = min(_timed(lambda: a @ b) for _ in range(repeats))
        best = max(best, 2 * m * k * n / seconds / 1e9)
    return best


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def cpu_line() -> str:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, flags {' '.join(shown)}, load average {os.getloadavg()[0]:.1f}"


def run_part(model: str, specs: list[str], frames: int, repeats: int, clip: Path) -> None:
    import torch

    from dycoke_cli.compress.spec import parse_spec
    from dycoke_cli.models import load_model
    from dycoke_cli.plan import plan_video
    from dycoke_cli.profile.runner import run_profile
    from dycoke_cli.settings import Generation
    from dycoke_cli.video import SamplingRequest, probe_video

    lm = load_model(model, device="cpu")
    peak = matmul_peak(getattr(torch, lm.dtype))
    probe = probe_video(clip)
    plans = [(spec, plan_video(probe, SamplingRequest(frames=frames), parse_spec(spec), lm.adapter)) for spec in specs]
    report = run_profile(lm, plans, "What happens in this video?", Generation(max_new_tokens=4), repeats)
    print(f"\n{model}, {frames} frames, CPU {lm.dtype}; {cpu_line()}; {lm.dtype} matmul peak {peak:.0f} GFLOP/s\n")
    print("| setting | visual tokens | vision (s) | vision GFLOP/s | % of peak | prefill (s) | time to first token (s) | "
          "TTFT none / this |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in report["settings"]:
        t = s["timings"]
        vision = t["vision_encode_s"]["median"]
        rate = s["vision_flops"] / vision / 1e9 if s["vision_flops"] and vision else None
        print(f"| {s['label']} | {s['visual_tokens_after']:,} | {vision:.2f} | "
              f"{'-' if rate is None else f'{rate:.0f}'} | {'-' if rate is None else f'{100 * rate / peak:.0f}'} | "
              f"{t['prefill_s']['median']:.2f} | {t['time_to_first_token_s']['median']:.2f} | "
              f"{s['ratios']['speedup']['time_to_first_token_s']:.2f}x |", flush=True)
    spread = [s["timings"]["time_to_first_token_s"] for s in report["settings"]]
    print(f"\nrounds: 1 warm-up + {repeats}; widest TTFT spread over rounds: "
          f"{max((t['max'] - t['min']) / t['median'] for t in spread):.0%} of its median; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="all", choices=[*PARTS, "all"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    from dycoke_cli.sample_clip import write_sample

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_sample(Path(tmp) / "clip.mp4")
        for name in PARTS if args.part == "all" else [args.part]:
            run_part(*PARTS[name], args.frames, args.repeats, clip)


if __name__ == "__main__":
    main()
