"""Five settings over one question set: one multi-setting `dycoke run` against five single-setting runs.

    python benchmarks/bench_compare.py [--clips 200] [--seed 90210] [--work runs/bench-compare] [--repeat 1]

Makes `--clips` builtin:shapes clips (`dycoke sample`, four questions each), then
times, each in a fresh process and from empty answers files,

    dycoke run questions.jsonl --model builtin:shapes --frames 8 -c SETTING           (once per setting)
    dycoke run questions.jsonl --model builtin:shapes --frames 8 -c S1 -c S2 ... -c S5 (all at once)

A setting's language-model time is what its single run spent past the video: the sum over its answers
of total_s less video decode, preprocessing and vision encode (selection, prefill, decode). The goal:
the multi-setting run's wall time at most 1.3x the longest single run plus the other four settings'
language-model time, i.e. the video decoded once and encoded once per distinct set of frames. The
answers of each setting are checked equal to its single run's (timings aside). With --repeat N the
runs go round-robin N times and each figure is the best round, every round's wall time beside it.
Every run has `--threads` torch threads (default 1: on a shared machine a thread pool larger than the
free cores spins, and the wall time measures the neighbours); the CPU seconds each run used are given
too. The header names the processor's flags and the load average, at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_cpu_dtype import cpu_facts  # noqa: E402
from dycoke_cli.outputs import file_tag  # noqa: E402

SETTINGS = ["none", "dycoke", "evs:budget=0.25", "vidcom2:budget=0.25", "uniform:budget=0.5"]
VIDEO_STAGES = ("video_decode_s", "preprocess_s", "vision_encode_s")
GOAL = 1.3


def command(questions: Path, out: Path, specs: list[str]) -> list[str]:
    return [sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(out), "--model", "builtin:shapes",
            "--frames", "8", "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "24", "--offline",
            *[a for spec in specs for a in ("-c", spec)]]


def timed_run(questions: Path, folder: Path, specs: list[str], threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `dycoke run` into an empty folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command(questions, folder / "answers.jsonl", specs), cwd=ROOT, capture_output=True,
                          text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"dycoke run failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lm_seconds(answers: list[dict]) -> float:
    """What a setting's answers cost past the video: selection, prompt, prefill, decode."""
    return sum(a["total_s"] - sum(a[k] for k in VIDEO_STAGES) for a in answers)


def comparable(line: dict) -> dict:
    return {k: v for k, v in line.items() if not (k.endswith("_s") or k.startswith("peak_"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=90210)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-compare"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    work = args.work.resolve()
    questions = work / "data" / "questions.jsonl"
    if not questions.is_file():
        subprocess.run([sys.executable, "-m", "dycoke_cli", "sample", str(work / "data"), "--clips",
                        str(args.clips), "--seed", str(args.seed)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"start: {cpu_facts()}", flush=True)
    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in SETTINGS + ["all"]}
    lm: dict[str, list[float]] = {s: [] for s in SETTINGS}
    same = True
    for round_ in range(args.repeat):
        runs["all"].append(timed_run(questions, work / "multi", SETTINGS, args.threads))
        for spec in SETTINGS:
            runs[spec].append(timed_run(questions, work / f"single-{file_tag(spec)}", [spec], args.threads))
            alone = lines(work / f"single-{file_tag(spec)}" / "answers.jsonl")
            lm[spec].append(lm_seconds(alone))
            together = lines(work / "multi" / f"answers.{file_tag(spec)}.jsonl")
            same &= [comparable(a) for a in alone] == [comparable(a) for a in together]
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {w:.1f} s" for k, v in runs.items() for w, _ in v[-1:])
              + f"; load average {os.getloadavg()[0]:.2f}", flush=True)
    records = len(lines(work / "multi" / f"answers.{file_tag(SETTINGS[0])}.jsonl"))
    best = {s: min(runs[s]) for s in runs}  # (wall, cpu) of the round with the shortest wall time
    best_lm = {s: min(lm[s]) for s in SETTINGS}
    longest = max(SETTINGS, key=lambda s: best[s][0])
    bound = best[longest][0] + sum(best_lm[s] for s in SETTINGS if s != longest)
    print(f"\n{args.clips} builtin:shapes clips (seed {args.seed}), {records} questions, 8 frames, float32, "
          f"24 new tokens at most, {args.threads} thread(s) per run; best of {args.repeat} round(s)\n")
    print("| run | wall (s) | CPU (s) | language-model time (s) | every round's wall (s) |")
    print("|---|---:|---:|---:|---|")
    for spec in SETTINGS + ["all"]:
        name = f"`-c {spec}` alone" if spec != "all" else "all five settings in one run"
        model = f"{best_lm[spec]:.1f}" if spec != "all" else ""
        print(f"| {name} | {best[spec][0]:.1f} | {best[spec][1]:.1f} | {model} | "
              f"{', '.join(f'{w:.1f}' for w, _ in runs[spec])} |")
    singles = sum(best[s][0] for s in SETTINGS)
    print(f"| sum of the five single runs | {singles:.1f} | {sum(best[s][1] for s in SETTINGS):.1f} | | |")
    print(f"\nbound = longest single run ({longest}, {best[longest][0]:.1f} s) + the other four's language-model "
          f"time ({bound - best[longest][0]:.1f} s) = {bound:.1f} s")
    print(f"one run / bound = {best['all'][0] / bound:.2f} (goal <= {GOAL}); one run / five runs = "
          f"{best['all'][0] / singles:.2f} (wall), {best['all'][1] / sum(best[s][1] for s in SETTINGS):.2f} (CPU); "
          f"every setting's answers equal its single run's: {'yes' if same else 'NO'}")
    print(f"end: {cpu_facts()}")
    return 0 if same and best["all"][0] <= GOAL * bound else 1


if __name__ == "__main__":
    sys.exit(main())
