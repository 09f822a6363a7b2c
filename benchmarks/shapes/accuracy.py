"""Accuracy of `builtin:shapes` under every compression method, through the real CLI.

    python benchmarks/shapes/accuracy.py [--work runs/shapes-accuracy] [--clips 200] [--seed 90210]

Makes fresh clips as `dycoke sample` does (seed 90210 is used by nothing in
training, which draws from seeds 1234 and 1235), then for each setting runs

    dycoke run questions.jsonl --model builtin:shapes --compress SPEC [--budget B] --frames 8 ...

in its own process, exactly as a user would, and scores the answers file per task. Settings: no
compression, DyCoke at its defaults, then every method at budgets 0.5, 0.25 and 0.1 of the visual
tokens (a budget a method cannot reach, e.g. DyCoke below its whole anchor frames, is reported as
such). Prints a markdown table with 95% Wilson intervals, writes results.json and, when matplotlib
is installed, accuracy.png. Answers files are kept and `dycoke run` resumes them, so a rerun only completes and scores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dycoke_cli import shapes  # noqa: E402

BUDGETS = (0.5, 0.25, 0.1)


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: sound at 0 and 1 and for small n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def settings(methods: list[str]) -> list[tuple[str, str, float | None]]:
    """(label, --compress spec, --budget) of every run."""
    out = [("none", "none", None), ("dycoke (defaults)", "dycoke", None)]
    for method in methods:
        if method != "none":
            out += [(f"{method} @ {b:g}", method, b) for b in BUDGETS]
    return out


def prepare_work(work: Path, clips: int, seed: int) -> Path:
    """The questions file of `clips` fresh clips under work/data (made once, kept for resumed runs), and
    the work/answers folder; returns the questions file."""
    questions = work / "data" / "questions.jsonl"
    if not questions.is_file():
        shapes.make(work / "data", clips, seed)
    (work / "answers").mkdir(parents=True, exist_ok=True)
    return questions


def run_one(questions: Path, answers: Path, model: str, spec: str, budget: float | None, dtype: str = "float32",
            env: dict | None = None) -> tuple[int, str, float]:
    """One `dycoke run` (resumed where `answers` left off): (exit status, last stderr line, seconds)."""
    command = [sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(answers), "--model", model,
               "--compress", spec, "--frames", str(shapes.FRAMES), "--device", "cpu", "--dtype", dtype,
               "--max-new-tokens", "24", "--offline", "--json"]
    if budget is not None:
        command += ["--budget", str(budget)]
    started = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))  # one core per run: --jobs runs side by side
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    return done.returncode, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "", \
        time.perf_counter() - started


def score(answers: Path) -> dict:
    """task -> (correct, scored, failed) from an answers file."""
    out: dict[str, list[int]] = {task: [0, 0, 0] for task in shapes.TASKS}
    for raw in answers.read_text().splitlines():
        line = json.loads(raw)
        task = line.get("task") or str(line["id"]).rsplit("-", 1)[-1]
        if "error" in line:
            out[task][2] += 1
        else:
            out[task][0] += line.get("correct") is True
            out[task][1] += 1
    return {task: tuple(v) for task, v in out.items()}


def table(results: list[dict]) -> str:
    head = "| setting | " + " | ".join(shapes.TASKS) + " | seconds |"
    lines = [head, "|" + "---|" * (len(shapes.TASKS) + 2)]
    for r in results:
        if r.get("refused"):
            lines.append(f"| {r['label']} | " + " | ".join(["n/a"] * len(shapes.TASKS)) + f" | {r['refused']} |")
            continue
        cells = []
        for task in shapes.TASKS:
            correct, n, _ = r["tasks"][task]
            lo, hi = wilson(correct, n)
            cells.append(f"{100 * correct / n:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]" if n else "-")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> bool:
    """Accuracy per task against the budget, one line per method; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(shapes.TASKS), figsize=(4 * len(shapes.TASKS), 3.6), sharey=True)
    base = next(r for r in results if r["spec"] == "none")
    for ax, task in zip(axes, shapes.TASKS):
        by_method: dict[str, list] = {}
        for r in results:
            if r["budget"] is not None and not r.get("refused") and r["tasks"][task][1]:
                correct, n, _ = r["tasks"][task]
                by_method.setdefault(r["spec"], []).append((r["budget"], correct / n, *wilson(correct, n)))
        for method, points in by_method.items():
            points.sort()
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            errs = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=2, label=method)
        correct, n, _ = base["tasks"][task]
        ax.axhline(correct / n, color="black", linestyle="--", linewidth=1, label="none (all tokens)")
        ax.set_xscale("log")
        ax.set_xticks(BUDGETS, [f"{b:g}" for b in BUDGETS])
        ax.minorticks_off()  # log-scale minor labels (2x10^-1 ...) would overprint the budgets
        ax.set_title(task)
        ax.set_xlabel("budget (share of visual tokens)")
    axes[0].set_ylabel("accuracy (95% Wilson)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/shapes-accuracy"))
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=90210)
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    parser.add_argument("--jobs", type=int, default=1, help="settings run side by side (one core each)")
    args = parser.parse_args(argv)
    from dycoke_cli.compress.registry import METHODS

    methods = args.methods.split(",") if args.methods else list(METHODS)
    work = args.work.resolve()
    questions = prepare_work(work, args.clips, args.seed)

    def one(setting):
        label, spec, budget = setting
        answers = work / "answers" / f"{spec}-{budget if budget is not None else 'default'}.jsonl"
        record = {"label": label, "spec": spec, "budget": budget}
        _, last, record["seconds"] = run_one(questions, answers, args.model, spec, budget)  # resumes
        lines = [json.loads(raw) for raw in answers.read_text().splitlines()] if answers.is_file() else []
        if not lines or all("error" in line for line in lines):  # the setting itself was refused
            reason = lines[0]["error"].split(": ", 1)[-1] if lines else last.removeprefix("error: ")
            record["refused"] = reason
        else:
            record["tasks"] = score(answers)
        print(f"{label}: {record.get('refused') or record['tasks']}", file=sys.stderr, flush=True)
        return record

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(one, settings(methods)))
    (work / "results.json").write_text(json.dumps({"clips": args.clips, "seed": args.seed, "model": args.model,
                                                   "results": results}, indent=1))
    print(table(results))
    if plot(results, work / "accuracy.png"):
        print(f"\nplot: {work / 'accuracy.png'}")
    else:
        print("\n(no plot: matplotlib is not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
