"""Start-up: time to the first byte on stdout, and wall time, of whole `dycoke` processes.

    python benchmarks/bench_startup.py [--runs 5] [--tree DIR ...] [--threads N]

What a user waits for before anything shows: `dycoke --help`, `dycoke methods`, and the answer of
README's first command (`dycoke ask` on a generated clip with `--model builtin:shapes --frames 8`);
beside them the floor no transformers-based command gets under: importing torch, transformers and
the LLaVA-OneVision modeling module in a bare interpreter.
Each command runs as a fresh process (`python -m dycoke_cli`), stdout read as it arrives; the
figures are medians over --runs, with min and max.

--tree DIR (repeatable) runs the package found in DIR (a checkout, e.g. `git archive REV | tar -x -C
DIR`) instead of the installed one, so a before/after pair is measured in one run: the trees are
interleaved run by run, so a machine whose load drifts charges both alike. The processor's flags
that decide CPU speed (lscpu) and the load average (before and after) are printed beside the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def first_byte(argv: list[str], env: dict, cwd: Path, timeout: float = 300) -> tuple[float, float, int]:
    """(seconds to the first byte on stdout, seconds to exit, exit code) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    first = proc.stdout.read(1)
    at = time.perf_counter() - start
    proc.stdout.read()
    code = proc.wait(timeout=timeout)
    end = time.perf_counter() - start
    return (at if first else float("nan")), end, code


def processor() -> str:
    """The model name, core count and the speed-relevant flags lscpu lists."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    present = [f for f in FLAGS_OF_INTEREST if f in flags]
    absent = [f for f in FLAGS_OF_INTEREST if f not in flags]
    return (f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} CPUs; flags {' '.join(present) or '-'}; "
            f"no {' '.join(absent) or '-'}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tree", action="append", type=Path, default=[],
                        help="a checkout whose dycoke_cli to run (repeatable); default: the installed package")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the processes")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    subprocess.run([sys.executable, "-m", "dycoke_cli", "sample", str(work / "demo"), "--clips", "1", "--seed",
                    "90210"], check=True, capture_output=True, cwd=REPO)
    clip = work / "demo" / "clips" / "s90210-00000.mp4"
    commands = {
        "dycoke --help": ["--help"],
        "dycoke methods": ["methods"],
        "dycoke ask (builtin:shapes)": ["ask", str(clip), "Describe the clip.", "--model", "builtin:shapes",
                                        "--frames", "8", "-q"],
    }
    # The floor any transformers-based command pays before its first byte: importing torch, transformers and
    # the model's modeling module (transformers' own imports pull in torch._dynamo and torch.distributed).
    floor = [sys.executable, "-c", "import transformers.models.llava_onevision.modeling_llava_onevision; print()"]
    trees = args.tree or [None]
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        base_env["OMP_NUM_THREADS"] = str(args.threads)
    results: dict[tuple, list[tuple[float, float]]] = {}
    before = load()
    for _ in range(args.runs + 1):  # the first round warms the page cache and the dtype probe's cache
        for name, cmd in commands.items():
            for tree in trees:
                env = dict(base_env)
                if tree is not None:
                    env["PYTHONPATH"] = str(tree.resolve())
                at, end, code = first_byte([sys.executable, "-m", "dycoke_cli", *cmd], env, work)
                if code != 0:
                    sys.exit(f"{name} ({tree or 'installed'}) exited {code}")
                results.setdefault((name, tree), []).append((at, end))
        at, end, _ = first_byte(floor, base_env, work)
        results.setdefault(("import torch + transformers + LLaVA-OV modeling (floor)", None), []).append((at, end))
    after = load()

    print(f"{processor()}\n{before} before, {after} after; {args.runs} runs per row after one unmeasured round"
          + (f"; OMP_NUM_THREADS={args.threads}" if args.threads else "") + "\n")
    print("| command | tree | first byte median (s) | min-max (s) | exit median (s) |")
    print("|---|---|---:|---:|---:|")
    for (name, tree), values in results.items():
        firsts = [a for a, _ in values[1:]]
        ends = [e for _, e in values[1:]]
        print(f"| {name} | {tree or ('-' if 'floor' in name else 'installed')} | {statistics.median(firsts):.2f} | {min(firsts):.2f}-"
              f"{max(firsts):.2f} | {statistics.median(ends):.2f} |")


if __name__ == "__main__":
    main()
