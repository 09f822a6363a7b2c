"""The video cache across processes, and what a cached prompt prefix would add.

    python benchmarks/bench_cache.py [--model random:llava-onevision-0.5b] [--frames 8] [--repeats 2]

1. A second `dycoke ask` on the same clip. Each round empties a private cache folder, then runs the
   real command in fresh processes: the first call (it encodes and stores), the second (it reads the
   video from the cache), and a call with --no-cache (what every call cost before). Reported: time to
   first token as the command's --json gives it, model load, and the whole call's wall time around
   the process (interpreter start, imports, load, answer). Best of the rounds.
2. A lookup that misses against the encode it precedes, in process: the first lookup of a process
   (it also fingerprints the model's files once), later ones, and storing the entry.
3. The prompt's prefix KV ([system + video] head), not shipped: what it would save is the prefill
   that a stored KV leaves to the question (measured here as a follow-up question's prefill, which is
   exactly that), against writing and reading that KV. Its size comes from the model's config (2 x
   layers x KV heads x head dim x dtype bytes per token); a safetensors write and read of that many
   bytes is timed on this disk (warm page cache). The 7B row is computed from the random:llava-
   onevision-7b configuration (nothing is built): KV and feature sizes exactly, its prefill time as
   this model's measured prefill scaled by the ratio of prefill FLOPs (profile/flops.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# A sibling script's helpers: the processor, its flags and the load; --model, --frames, --new-tokens.
from bench_cpu_dtype import cpu_facts, model_arguments  # noqa: E402

QUESTION = "What happens in this video?"
FOLLOW_UP = "What colour is the moving bar?"


def private_home(root: Path) -> Path:
    """A DYCOKE_CACHE whose random models are the user's (linked), with an encodings folder of its own."""
    from dycoke_cli.paths import cache_root

    home = root / "home"
    home.mkdir()
    (home / "random").symlink_to(cache_root() / "random")
    return home


def ask(clip: Path, home: Path, args, *extra: str) -> dict:
    command = [sys.executable, "-m", "dycoke_cli", "ask", str(clip), QUESTION, "--model", args.model, "--frames",
               str(args.frames), "--max-new-tokens", str(args.new_tokens), "--device", "cpu", "--json", *extra]
    before, start = children_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DYCOKE_CACHE": str(home)})
    wall, cpu = time.perf_counter() - start, children_cpu() - before
    if done.returncode:
        raise SystemExit(done.stderr)
    return {**json.loads(done.stdout), "wall_s": wall, "cpu_s": cpu}


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: on a loaded machine the wall time
    of a call grows with the load, its CPU time much less."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def second_call(clip: Path, home: Path, args) -> dict[str, list[dict]]:
    runs = {"first": [], "second": [], "no-cache": []}
    for _ in range(args.repeats):
        shutil.rmtree(home / "encodings", ignore_errors=True)
        runs["first"].append(ask(clip, home, args))
        runs["second"].append(ask(clip, home, args))
        runs["no-cache"].append(ask(clip, home, args, "--no-cache"))
    return runs


def print_second_call(runs: dict[str, list[dict]]) -> dict:
    best = {name: min(rs, key=lambda r: r["time_to_first_token_s"]) for name, rs in runs.items()}
    walls = {name: min(r["wall_s"] for r in rs) for name, rs in runs.items()}
    cpus = {name: min(r["cpu_s"] for r in rs) for name, rs in runs.items()}
    print("| call | video from | vision encode (s) | cache read / write (s) | time to first token (s) "
          "| TTFT / first call's | load (s) | whole call, wall (s) | wall / first call's | whole call, CPU (s) "
          "| CPU / first call's |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    first = best["first"]
    for name in ("no-cache", "first", "second"):
        r = best[name]
        print(f"| {name} | {r['video_source']} | {r['vision_encode_s']:.2f} | {r['cache_read_s']:.3f} / "
              f"{r['cache_write_s']:.3f} | {r['time_to_first_token_s']:.2f} | "
              f"{100 * r['time_to_first_token_s'] / first['time_to_first_token_s']:.1f}% | {r['load_s']:.2f} | "
              f"{walls[name]:.2f} | {100 * walls[name] / walls['first']:.1f}% | {cpus[name]:.1f} | "
              f"{100 * cpus[name] / cpus['first']:.1f}% |")
    second = best["second"]
    print(f"\nsecond call: time to first token {second['time_to_first_token_s']:.2f} s of the first call's "
          f"{first['time_to_first_token_s']:.2f} s; of its {walls['second']:.2f} s wall time, "
          f"{second['load_s']:.2f} s load the model and {walls['second'] - second['total_s'] - second['load_s']:.2f} s "
          f"start the interpreter and import (the answer itself: {second['total_s']:.2f} s)")
    return best


def lookups(lm, clip: Path, args, root: Path) -> dict:
    from dycoke_cli.cache import VideoCache
    from dycoke_cli.engine import encode
    from dycoke_cli.plan import plan_video
    from dycoke_cli.stats import VIDEO_STAGES
    from dycoke_cli.video import SamplingRequest, probe_video

    plan = plan_video(probe_video(clip), SamplingRequest(frames=args.frames), "dycoke", lm.adapter)
    cache = VideoCache(folder=root / "lookups", notice=print)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        assert cache.find(lm, plan).hit is None
        times.append(time.perf_counter() - start)
    video = encode(lm, plan, cache)  # a miss: encodes, then stores
    encode_s = sum(getattr(video.stats, k) for k in VIDEO_STAGES if not k.startswith("cache"))
    (entry,) = (root / "lookups").iterdir()
    print("| step | seconds | share of the encode |")
    print("|---|---:|---:|")
    rows = [("encode (decode + preprocess + vision)", encode_s),
            ("first lookup of a process (key, model files fingerprinted, miss)", times[0]),
            ("later lookup (key: the video's first and last MiB hashed, miss)", statistics.median(times[1:])),
            (f"store ({entry.stat().st_size / 2**20:.1f} MiB entry, fsync)", video.stats.cache_write_s)]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} | {100 * seconds / encode_s:.2f}% |")
    return {"encode_s": encode_s, "entry_bytes": entry.stat().st_size, "video": video, "plan": plan}


def kv_bytes_per_token(text_config, dtype_bytes: int = 2) -> int:
    from dycoke_cli.profile.flops import LMDims

    dims = LMDims.from_config(text_config)
    return 2 * dims.layers * dims.kv_heads * dims.head_dim * dtype_bytes


def kv_round_trip(total_bytes: int, root: Path) -> tuple[float, float]:
    """Seconds to write (fsync'd) and read back an entry of `total_bytes` of bf16 KV, through the cache's
    own file format."""
    import torch

    from dycoke_cli.cache.store import encode_entry, read_entry, write_entry

    tensors = {"kv": torch.zeros(total_bytes // 2, dtype=torch.bfloat16)}
    start = time.perf_counter()
    path = write_entry(root, "0" * 64, encode_entry("0" * 64, tensors, {}))
    written = time.perf_counter() - start
    start = time.perf_counter()
    read_entry(path, "0" * 64, 2**40)
    return written, time.perf_counter() - start


def prefix_kv(lm, measured: dict, best: dict, root: Path) -> None:
    from types import SimpleNamespace

    from dycoke_cli.engine import Session
    from dycoke_cli.models.random_specs import random_spec
    from dycoke_cli.profile.flops import LMDims, prefill_flops
    from dycoke_cli.settings import Generation

    generation = Generation(max_new_tokens=4)
    Session(lm, measured["video"], measured["plan"]).ask("warm up", generation)
    session = Session(lm, measured["video"], measured["plan"])
    full = session.ask(QUESTION, generation).stats  # the whole prompt prefilled
    split = session.ask(FOLLOW_UP, generation, keep_logits=True)  # the [system + video] head's KV reused:
    follow = split.stats  # what a stored one would give
    whole = Session(lm, measured["video"], measured["plan"]).ask(FOLLOW_UP, generation, keep_logits=True)
    drift = max(float((a.float() - b.float()).abs().max()) for a, b in zip(split.logits, whole.logits))
    head = follow.prefix_reused_tokens
    second = best["second"]
    rows = []
    for name, text_config, features_bytes, prefill_s in [
        (lm.source.spec + " (measured)", lm.adapter.text_config, measured["entry_bytes"], full.prefill_s),
        ("random:llava-onevision-7b (computed)", SimpleNamespace(**random_spec("random:llava-onevision-7b").text),
         None, None),
    ]:
        per_token = kv_bytes_per_token(text_config)
        kv = head * per_token
        written, read = kv_round_trip(kv, root)
        if prefill_s is None:  # scaled from the measured model by prefill FLOPs
            ratio = (prefill_flops(full.prompt_tokens, LMDims.from_config(text_config))
                     / prefill_flops(full.prompt_tokens, LMDims.from_config(lm.adapter.text_config)))
            prefill_s, question_s = full.prefill_s * ratio, follow.prefill_s * ratio
            features_bytes = measured["video"].features.tokens.numel() * text_config.hidden_size // \
                lm.adapter.text_config.hidden_size * 2
        else:
            question_s = follow.prefill_s
        saved = prefill_s - question_s - read
        rows.append((name, per_token, kv, features_bytes, prefill_s, question_s, written, read, saved))
    print(f"prefix of {head:,} tokens ([system + video] head) under DyCoke defaults, {full.prompt_tokens:,}-token "
          "prompt; KV in bf16")
    print("| model | KV bytes / token | prefix KV (MiB) | features entry (MiB) | full prefill (s) | question-only "
          "prefill (s) | KV write / read (s) | saved per later call (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, per_token, kv, features_bytes, prefill_s, question_s, written, read, saved in rows:
        print(f"| {name} | {per_token:,} | {kv / 2**20:.1f} | {features_bytes / 2**20:.1f} | {prefill_s:.2f} | "
              f"{question_s:.2f} | {written:.3f} / {read:.3f} | {saved:.2f} |")
    # The second call's own prefill, shrunk by the question-only share measured side by side above (a ratio,
    # so load on the machine between part 1 and here does not enter), plus reading the KV.
    ttft, prefill = second["time_to_first_token_s"], second["prefill_s"]
    with_kv = ttft - prefill + prefill * follow.prefill_s / full.prefill_s + rows[0][7]
    print(f"\nthe follow-up answered on the reused head against the whole prompt prefilled ({lm.dtype}): tokens "
          f"{'identical' if split.token_ids == whole.token_ids else 'different'}, largest logit difference {drift:.3g}")
    print(f"\n{lm.source.spec}: second call's time to first token {ttft:.2f} s with the features cached (prefill "
          f"{prefill:.2f} s of it); with the prefix KV too it would be about {with_kv:.2f} s "
          f"({100 * with_kv / best['first']['time_to_first_token_s']:.1f}% of the first call's)")


def main() -> None:
    parser = argparse.ArgumentParser()
    model_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from dycoke_cli.models import load_model
    from dycoke_cli.sample_clip import write_sample

    root = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    clip = write_sample(root / "clip.mp4")
    home = private_home(root)
    print(f"{cpu_facts()}\nmodel {args.model}, {args.frames} frames, CPU, DyCoke defaults, {args.new_tokens} new "
          f"tokens, {args.repeats} round(s), best of each\n")
    best = print_second_call(second_call(clip, home, args))
    print()
    lm = load_model(args.model, device="cpu")
    measured = lookups(lm, clip, args, root)
    print()
    prefix_kv(lm, measured, best, root)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
