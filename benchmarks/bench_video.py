"""Benchmark dycoke's frame sampler against decoding every frame, and against transformers.

    python benchmarks/bench_video.py [--frames 8,32,64] [--repeat 3] [--cache DIR] [--quick]

Generates (once, cached in a temp dir) a 10-minute and a 20-second 1280x720 30 fps H.264 file with
a keyframe every 250 frames, then times each variant in a fresh subprocess so that its peak RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss) is its own. Prints a markdown table.

Variants:
- dycoke: dycoke_cli.video.read_frames(path, Sampling(frames=N)).
- decode-all: decode every frame with PyAV (default settings) and keep the same N frames dycoke
  picks, converting only those to RGB; its frames are checked to be identical to dycoke's.
- transformers: transformers.video_utils.load_video(path, num_frames=N, backend="pyav"), which
  picks i * total // N and decodes from the start up to its last pick.
Wall time is the call alone (imports excluded); the best of --repeat runs is shown with its CPU
time (user + system, all threads: the work done, which other load on the machine disturbs less
than wall time). "RSS growth" is peak RSS minus the RSS just before the call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # videogen: the same synthetic-video writer as the tests

VIDEOS = {"10 min": ("long.mp4", 18000), "20 s": ("short.mp4", 600)}


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def _digest(pixels, indices) -> str:
    h = hashlib.sha1(json.dumps([int(i) for i in indices]).encode())
    h.update(pixels.tobytes())
    return h.hexdigest()[:12]


def worker(variant: str, path: str, n: int) -> dict:
    """Runs in a fresh subprocess: one variant, one call."""
    import av  # noqa: F401 - imports are not part of the timed call
    import numpy as np

    from dycoke_cli.video import Sampling, read_frames

    if variant == "transformers":
        try:
            from transformers.video_utils import load_video
        except Exception as e:  # noqa: BLE001 - reported in the table
            return {"error": f"import failed: {type(e).__name__}: {e}"[:120]}
    before = _rss_now_mib()
    cpu0 = _cpu_s()
    start = time.perf_counter()
    if variant == "dycoke":
        frames = read_frames(path, Sampling(frames=n))
        pixels, indices = frames.pixels, frames.indices
    elif variant == "decode-all":
        pixels, indices = _decode_all_and_pick(path, n, np)
    else:
        try:
            pixels, meta = load_video(path, num_frames=n, backend="pyav")
            indices = list(meta.frames_indices)
        except Exception as e:  # noqa: BLE001 - reported in the table
            return {"error": f"{type(e).__name__}: {e}"[:120]}
    wall = time.perf_counter() - start
    return {"wall": wall, "cpu": _cpu_s() - cpu0, "peak": _peak_mib(),
            "growth": _peak_mib() - before,
            "count": len(indices), "digest": _digest(pixels, indices)}


def _decode_all_and_pick(path: str, n: int, np):
    """Decode every frame in order; keep (as RGB) the frames dycoke's contract picks: the last
    frame at or before the centre of each of n equal segments (these files are constant-rate)."""
    import av

    with av.open(path) as container:
        vs = container.streams.video[0]
        fps, total = float(vs.average_rate), vs.frames
        duration = total / fps
        wanted = sorted({min(int((i + 0.5) * duration / n * fps + 1e-6), total - 1)
                         for i in range(n)})
        want, kept = set(wanted), []
        for i, frame in enumerate(container.decode(vs)):
            if i in want:
                kept.append(frame.to_ndarray(format="rgb24"))
    return np.stack(kept), wanted


def ensure_videos(cache: Path) -> dict[str, Path]:
    import videogen

    cache.mkdir(parents=True, exist_ok=True)
    paths = {}
    for label, (name, n) in VIDEOS.items():
        path = cache / name
        if not path.exists():
            print(f"generating {label} video ({n} frames) in {cache} ...", file=sys.stderr)
            t = time.perf_counter()
            tmp = videogen.make_video(cache / f"tmp-{name}", n=n, fps=30, width=1280, height=720,
                                      gop=250)
            tmp.rename(path)
            print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        paths[label] = path
    return paths


def run_variant(variant: str, path: Path, n: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", variant, str(path), str(n)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["crashed"])[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="8,32,64")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "dycoke-bench-video")
    ap.add_argument("--quick", action="store_true", help="only the 20-second video")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        variant, path, n = args.worker
        print(json.dumps(worker(variant, path, int(n))))
        return
    videos = ensure_videos(args.cache)
    if args.quick:
        videos.pop("10 min")
    counts = [int(x) for x in args.frames.split(",")]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          f"best of {args.repeat} runs, each in a fresh process\n")
    print("| video | frames | variant | wall s | speedup vs decode-all | CPU s | peak RSS MiB "
          "| RSS growth MiB | same frames as dycoke |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, path in videos.items():
        for n in counts:
            results = {}
            for variant in ("dycoke", "decode-all", "transformers"):
                runs = [run_variant(variant, path, n) for _ in range(args.repeat)]
                ok = [r for r in runs if "error" not in r]
                results[variant] = ({**min(ok, key=lambda r: r["wall"]),
                                     "peak": max(r["peak"] for r in ok),
                                     "growth": max(r["growth"] for r in ok)} if ok else runs[0])
            base = results["decode-all"].get("wall")
            for variant, r in results.items():
                if "error" in r:
                    print(f"| {label} | {n} | {variant} | failed: {r['error']} | | | | | |")
                    continue
                speed = f"{base / r['wall']:.1f}x" if base else "n/a"
                same = ("yes" if r["digest"] == results["dycoke"].get("digest") else
                        f"no (picks other frames, {r['count']})")
                print(f"| {label} | {n} | {variant} | {r['wall']:.2f} | {speed} | {r['cpu']:.2f} "
                      f"| {r['peak']:.0f} "
                      f"| {r['growth']:.0f} | {same if variant != 'dycoke' else '-'} |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
