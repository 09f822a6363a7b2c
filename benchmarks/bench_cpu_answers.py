"""Do the CPU decode paths change the built-in model's answers? Token for token against the stock fp32 path.

    python benchmarks/bench_cpu_answers.py [--work runs/cpu-answers] [--clips 200] [--seed 90210] [--jobs 2]

On fresh clips of `builtin:shapes` (seed 90210, used by nothing in training; 4 questions each), runs
`dycoke run` with `-c none` and `-c dycoke` under each decode path, in its own process as a user would
(one thread each, `--jobs` side by side), and compares every answer with the reference's:
- `fp32 stock` (the reference): `--dtype float32`, DYCOKE_DECODE_KERNEL=dtype, DYCOKE_DECODE_ATTENTION=sdpa:
  F.linear and SDPA in fp32, what the tool ran before the CPU decode path;
- `fp32 new decode`: `--dtype float32` with DYCOKE_DECODE_KERNEL=fp16 and DYCOKE_DECODE_ATTENTION=grouped:
  every single-row product through packed fp16 weights, grouped decode attention;
- `auto`: `--dtype auto` as it stands on this processor (bf16 where native, then the decode path its
  probe picks): differences here come from the dtype of the tower and the prefill, not from decode.
Prints, per path and method, the answers identical to the reference's and the accuracy per task;
answers files are kept and resumed, so a rerun only completes and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "shapes"))
from accuracy import prepare_work, run_one, score  # noqa: E402
from bench_cpu_dtype import cpu_facts  # noqa: E402

from dycoke_cli import shapes  # noqa: E402

PATHS = {
    "fp32 stock": ("float32", {"DYCOKE_DECODE_KERNEL": "dtype", "DYCOKE_DECODE_ATTENTION": "sdpa"}),
    "fp32 new decode": ("float32", {"DYCOKE_DECODE_KERNEL": "fp16", "DYCOKE_DECODE_ATTENTION": "grouped"}),
    "auto": ("auto", {}),
}
METHODS = ("none", "dycoke")


def answers_of(path: Path) -> dict[str, str]:
    return {line["id"]: line.get("answer", line.get("error")) for line in map(json.loads, path.read_text().splitlines())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/cpu-answers"))
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=90210)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = args.work.resolve()
    questions = prepare_work(work, args.clips, args.seed)
    print(cpu_facts(), flush=True)
    runs = [(name, method) for name in PATHS for method in METHODS]

    def one(run):
        name, method = run
        dtype, env = PATHS[name]
        out = work / "answers" / f"{name.replace(' ', '-')}-{method}.jsonl"
        code, last, seconds = run_one(questions, out, "builtin:shapes", method, dtype, env)
        print(f"{name} -c {method}: exit {code} in {seconds:.0f} s {last}", file=sys.stderr, flush=True)
        return out

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        files = dict(zip(runs, pool.map(one, runs)))
    print(f"\n{args.clips} clips (seed {args.seed}), {4 * args.clips} questions, `--frames {shapes.FRAMES} "
          f"--max-new-tokens 24`\n")
    print("| path | method | answers identical to fp32 stock | " + " | ".join(shapes.TASKS) + " |")
    print("|---|---|---:|" + "---:|" * len(shapes.TASKS))
    for name, method in runs:
        reference, got = answers_of(files["fp32 stock", method]), answers_of(files[name, method])
        same = sum(got.get(key) == text for key, text in reference.items())
        tasks = score(files[name, method])
        cells = " | ".join(f"{100 * c / n:.1f}" if n else "-" for c, n, _ in (tasks[t] for t in shapes.TASKS))
        print(f"| {name} | {method} | {same} of {len(reference)} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
