"""Five settings over one question set: one multi-setting `dycoke run` against five single-setting runs.

    python benchmarks/bench_compare.py [--clips 200] [--seed 90210] [--work runs/bench-compare] [--repeat 1]

Makes `--clips` builtin:shapes clips (`python -m dycoke_cli.shapes make`, four questions each), then
times, each in a fresh process and from empty answers files,

    dycoke run questions.jsonl --model builtin:shapes --frames 8 -c SETTING           (once per setting)
    dycoke run questions.jsonl --model builtin:shapes --frames 8 -c S1 -c S2 ... -c S5 (all at once)

A setting's language-model time is what its single run spent past the video: the sum over its answers
of total_s less video decode, preprocessing and vision encode (selection, prefill, decode). The goal:
the multi-setting run's wall time at most 1.3x the longest single run plus the other four settings'
language-model time, i.e. the video decoded once and encoded once per distinct set of frames. The
answers of each setting are checked equal to its single run's (timings aside). With --repeat N the
runs go round-robin N times and each figure is the best round. The header names the processor's flags
and the load average, at the start and at the end: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
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


def timed_run(questions: Path, folder: Path, specs: list[str]) -> float:
    """Wall seconds of one `dycoke run` into an empty folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    done = subprocess.run(command(questions, folder / "answers.jsonl", specs), cwd=ROOT, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"dycoke run failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall


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
    args = parser.parse_args()
    work = args.work.resolve()
    questions = work / "data" / "questions.jsonl"
    if not questions.is_file():
        subprocess.run([sys.executable, "-m", "dycoke_cli.shapes", "make", str(work / "data"), "--clips",
                        str(args.clips), "--seed", str(args.seed)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"start: {cpu_facts()}")
    single: dict[str, list[float]] = {s: [] for s in SETTINGS}
    lm: dict[str, list[float]] = {s: [] for s in SETTINGS}
    multi: list[float] = []
    same = True
    for _ in range(args.repeat):
        multi.append(timed_run(questions, work / "multi", SETTINGS))
        for spec in SETTINGS:
            single[spec].append(timed_run(questions, work / f"single-{file_tag(spec)}", [spec]))
            alone = lines(work / f"single-{file_tag(spec)}" / "answers.jsonl")
            lm[spec].append(lm_seconds(alone))
            together = lines(work / "multi" / f"answers.{file_tag(spec)}.jsonl")
            same &= [comparable(a) for a in alone] == [comparable(a) for a in together]
    records = len(lines(work / "multi" / f"answers.{file_tag(SETTINGS[0])}.jsonl"))
    best = {s: min(single[s]) for s in SETTINGS}
    best_lm = {s: min(lm[s]) for s in SETTINGS}
    longest = max(SETTINGS, key=best.get)
    bound = best[longest] + sum(best_lm[s] for s in SETTINGS if s != longest)
    print(f"\n{args.clips} builtin:shapes clips (seed {args.seed}), {records} questions, 8 frames, float32, "
          f"24 new tokens at most; best of {args.repeat} round(s)\n")
    print("| run | wall (s) | language-model time (s) |")
    print("|---|---:|---:|")
    for spec in SETTINGS:
        print(f"| `-c {spec}` alone | {best[spec]:.1f} | {best_lm[spec]:.1f} |")
    print(f"| all five settings in one run | {min(multi):.1f} | |")
    print(f"| sum of the five single runs | {sum(best.values()):.1f} | |")
    print(f"\nbound = longest single run ({longest}, {best[longest]:.1f} s) + the other four's language-model time "
          f"({bound - best[longest]:.1f} s) = {bound:.1f} s")
    print(f"one run / bound = {min(multi) / bound:.2f} (goal <= {GOAL}); one run / five runs = "
          f"{min(multi) / sum(best.values()):.2f}; every setting's answers equal its single run's: "
          f"{'yes' if same else 'NO'}")
    print(f"end: {cpu_facts()}")
    return 0 if same and min(multi) <= GOAL * bound else 1


if __name__ == "__main__":
    sys.exit(main())
