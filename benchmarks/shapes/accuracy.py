"""Accuracy of `builtin:shapes` under every compression method: one multi-setting `dycoke run`.

    python benchmarks/shapes/accuracy.py [--work runs/shapes-accuracy] [--clips 200] [--seed 90210] [--jobs 2]

Makes fresh clips as `dycoke sample` does (seed 90210 is used by nothing in training, which draws
from seeds 1234 and 1235), then runs, exactly as a user would,

    dycoke run questions.jsonl --model builtin:shapes --frames 8 ... -c none -c dycoke -c evs:budget=0.5 ...

with every setting: no compression, DyCoke at its defaults, then every method at budgets 0.5, 0.25 and
0.1 of the visual tokens (a budget a method cannot reach, e.g. DyCoke below its whole anchor frames,
fails its records and is reported as such). Each video is decoded once and encoded once for every
setting that encodes the same frames. With --jobs N the videos are split into N `--shard` jobs run
side by side (one core each) and each setting's shards merged with `dycoke merge`. The comparison is
the run's own (`--json`, 95% Wilson intervals) and so is the plot (`--plot`); this script only prints
it as a markdown table and keeps it in results.json. Answers files are kept and resumed, so a rerun
only completes and scores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dycoke_cli import shapes  # noqa: E402
from dycoke_cli.outputs import file_tag  # noqa: E402
from dycoke_cli.render.compare import share  # noqa: E402

BUDGETS = (0.5, 0.25, 0.1)


def settings(methods: list[str]) -> list[str]:
    """Every --compress spec, in order: none, DyCoke's defaults, each method at each budget."""
    return ["none", "dycoke"] + [f"{m}:budget={b:g}" for m in methods if m != "none" for b in BUDGETS]


def dycoke(questions: Path, answers: Path, model: str, specs: list[str], *extra: str, dtype: str = "float32") -> list[str]:
    """The `dycoke run` command line of these settings (float32 unless told: the scores must not move with
    the processor's bf16 support)."""
    return [sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(answers), "--model", model,
            "--frames", str(shapes.FRAMES), "--device", "cpu", "--dtype", dtype, "--max-new-tokens", "24",
            "--offline", *[a for spec in specs for a in ("-c", spec)], *extra]


def answer(questions: Path, answers: Path, model: str, specs: list[str], jobs: int) -> None:
    """Answer every record under every setting: one run, or `jobs` shards side by side, then merged."""
    if jobs == 1:
        subprocess.run(dycoke(questions, answers, model, specs), cwd=REPO)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one core per shard
    shards = [subprocess.Popen(dycoke(questions, answers, model, specs, "--shard", f"{i}/{jobs}"), cwd=REPO, env=env)
              for i in range(jobs)]
    for shard in shards:
        shard.wait()
    for spec in specs:
        own = answers.with_name(f"{answers.stem}.{file_tag(spec)}{answers.suffix}")
        parts = sorted(own.parent.glob(f"{own.stem}.shard-*-of-{jobs}{own.suffix}"))
        merged = subprocess.run([sys.executable, "-m", "dycoke_cli", "merge", *map(str, parts),
                                 *([str(own)] if own.exists() else []), "-o", str(own)], cwd=REPO,
                                capture_output=True, text=True)
        if merged.returncode:
            sys.exit(merged.stderr)


def prepare_work(work: Path, clips: int, seed: int) -> Path:
    """The questions file of `clips` fresh clips under work/data (made once, kept for resumed runs), and
    the work/answers folder; returns the questions file."""
    questions = work / "data" / "questions.jsonl"
    if not questions.is_file():
        shapes.make(work / "data", clips, seed)
    (work / "answers").mkdir(parents=True, exist_ok=True)
    return questions


def run_one(questions: Path, answers: Path, model: str, spec: str, dtype: str = "float32",
            env: dict | None = None) -> tuple[int, str, float]:
    """One single-setting `dycoke run` (resumed where `answers` left off), on one core: (exit status, last
    stderr line, seconds)."""
    started = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run(dycoke(questions, answers, model, [spec], "--json", dtype=dtype), capture_output=True,
                          text=True, cwd=REPO, env=env)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return done.returncode, last, time.perf_counter() - started


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


def runnable(specs: list[str], model: str) -> tuple[list[str], dict[str, str]]:
    """The settings this model can take, and why it refuses the others (e.g. a selection inside a vision
    tower shallower than its layer): the run would refuse them all at once, before answering anything."""
    from dycoke_cli.compress.spec import parse_spec
    from dycoke_cli.errors import SettingsError
    from dycoke_cli.models import inspect_model
    from dycoke_cli.plan import check_method

    adapter = inspect_model(model, offline=True).adapter
    ok, refused = [], {}
    for spec in specs:
        try:
            check_method(parse_spec(spec).build(), adapter)
            ok.append(spec)
        except SettingsError as exc:
            refused[spec] = str(exc)
    return ok, refused


def table(report: dict, refused: dict[str, str]) -> str:
    """Markdown: per setting the tokens kept and each task's accuracy with its 95% interval; the settings
    the model refused, and those no record could run under, with the reason."""
    lines = ["| setting | tokens kept | " + " | ".join(shapes.TASKS) + " |", "|" + "---|" * (len(shapes.TASKS) + 2)]
    for s in report["settings"]:
        if s["error"] is not None:
            lines.append(f"| {s['label']} | n/a | " + " | ".join(["n/a"] * len(shapes.TASKS)) + " |")
            continue
        lines.append(f"| {s['label']} | {s['visual_tokens_kept']:.1f} | "
                     + " | ".join(share(s["tasks"].get(t)) for t in shapes.TASKS) + " |")
    for label in refused:
        lines.append(f"| {label} | n/a | " + " | ".join(["n/a"] * len(shapes.TASKS)) + " |")
    reasons = [f"- {s['label']}: {s['error']}" for s in report["settings"] if s["error"] is not None]
    reasons += [f"- {label}: {reason}" for label, reason in refused.items()]
    return "\n".join(lines + ([""] + reasons if reasons else []))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/shapes-accuracy"))
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=90210)
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    parser.add_argument("--jobs", type=int, default=1, help="shards run side by side (one core each)")
    args = parser.parse_args(argv)
    from dycoke_cli.compress.registry import METHODS

    specs, refused = runnable(settings(args.methods.split(",") if args.methods else list(METHODS)), args.model)
    work = args.work.resolve()
    questions = prepare_work(work, args.clips, args.seed)
    answers = work / "answers" / "answers.jsonl"
    answer(questions, answers, args.model, specs, max(1, args.jobs))
    # Every record is answered now: this run only reads the files back, compares and plots.
    done = subprocess.run(dycoke(questions, answers, args.model, specs, "--json", "--plot", str(work / "accuracy.png")),
                          cwd=REPO, capture_output=True, text=True)
    report = json.loads(done.stdout)
    (work / "results.json").write_text(json.dumps({"clips": args.clips, "seed": args.seed, "model": args.model,
                                                   "report": report, "refused": refused}, indent=1))
    print(table(report, refused))
    print(f"\nplot: {work / 'accuracy.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
