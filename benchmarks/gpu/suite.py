#!/usr/bin/env python3
"""The project's GPU numbers from one call on a lent GPU (no network there): see README.md here.

    python3 benchmarks/gpu/suite.py --out $OUT [--budget-s 420] [--only PART,...] [--list]
    python3 benchmarks/gpu/suite.py --dry-run --out DIR      # the same code path on the CPU, tiny models

What it does, in order:
1. installs the wheels that prepare.sh put in benchmarks/gpu/.whl into a private site folder (the GPU
   image has transformers 5.17 and no bitsandbytes) and puts that folder first on sys.path;
2. builds each random-weight model at real shapes through the product's own path
   (`inspect_model("random:...")` materialises config, tokenizer and safetensors once, then
   `load_model` loads them with from_pretrained, bitsandbytes 4-bit included), timing both steps;
3. feeds decoded synthetic frames (no PyAV needed) to `encode_frames` + `Session.ask`, one
   measurement per compression setting, the settings of one part interleaved and repeated so ratios
   are measured side by side in one process;
4. after EVERY measurement prints one progress line and rewrites results.json and RESULTS-gpu.md in
   --out, so a timeout or a crash still leaves every number measured so far.

Parts run most important first (llava-7b bf16 none/dycoke, then methods at budget 0.25, then 4-bit,
then 0.5B, then the Qwen specs when the registry has them). A part is skipped, with the reason
written down, when the time left (--budget-s from the start of this process, install included)
minus what the more important parts still need is less than its estimate. A hard stop at the
deadline plus a grace period writes what there is and exits 0.

"Time to first token" is from frames in hand to the first token: preprocess + vision encoder +
the method's selection + prefill (Stats.time_to_first_token_s); "prefill" is the language model's
part alone. Video decoding is not measured here (it is a CPU cost, measured by the CPU benchmarks).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WHEELS = HERE / ".whl"
STARTED = time.monotonic()

# ---------------------------------------------------------------------------------------------- plan

LLAVA_7B = "random:llava-onevision-7b"
LLAVA_05B = "random:llava-onevision-0.5b"
# (slot, the real shapes, the family's tiny spec that stands in for them in a dry run)
QWEN = [("qwen2.5-vl-7b", "random:qwen2.5-vl-7b", "random:tiny-qwen2.5-vl"),
        ("qwen3-vl-8b", "random:qwen3-vl-8b", "random:tiny-qwen3-vl")]
CORE = ["none", "dycoke", "dycoke:p=0"]  # dycoke:p=0 = TTM without DP: the DP decode overhead's baseline
# Selections inside the vision tower (at SigLIP layer 8 of 26), against none and post-encoder DyCoke
ENCODER = ["none", "dycoke", "dycoke:stage=encoder", "evs:stage=encoder", "earlytom", "dycoke:stage=encoder,budget=0.25"]
BUDGET = "0.25"
QUESTION = "What happens in this video? Describe the main events in order."
FOLLOWUP = "What colour is the moving bar?"


@dataclass
class Part:
    key: str  # "llava-7b/bf16": the slot, the same in a dry run (whose models are tiny)
    title: str
    model: str  # random spec
    quant: str  # "none" | "4bit"
    specs: list[str]  # compression settings, run interleaved
    repeats: int
    followup: bool
    priority: int  # lower runs first when time is short
    frames: int = 32
    tokens: int = 64
    budget: str | None = None  # --budget applied to every spec
    dtype: str = "bfloat16"
    est_load_s: float = 0.0  # estimate when the model must be (built and) loaded first
    est_measure_s: float = 3.0  # estimate per measurement
    note: str = ""


def budget_methods() -> list[str]:
    """Every registered method that takes a token budget (DyCoke first): the methods compared at 0.25."""
    from dycoke_cli.compress.registry import METHODS

    names = [name for name, cls in METHODS.items() if cls.budget_solves]
    return sorted(names, key=lambda n: (n != "dycoke", list(METHODS).index(n)))


def spec_known(spec: str) -> bool:
    """Whether the random-model registry has `spec`."""
    from dycoke_cli.errors import DycokeError
    from dycoke_cli.models import random_specs

    try:
        random_specs.random_spec(spec)
        return True
    except DycokeError:
        return False


def build_plan(dry_run: bool) -> list[Part]:
    methods = budget_methods()
    if dry_run:  # every slot on random:tiny, 4 frames, 4 tokens: the code path, not the numbers
        tiny = dict(model="random:tiny", frames=4, tokens=4, est_load_s=3, est_measure_s=0.5)
        # one method per code path: selection before prefill, fewer frames encoded, pruning inside prefill
        methods = [m for m in ("dycoke", "uniform", "fastv") if m in methods]
        parts = [
            Part("llava-7b/bf16", "LLaVA-OV 7B slot, bf16: none vs dycoke", specs=CORE, repeats=2, followup=True,
                 priority=0, quant="none", **tiny),
            Part("llava-7b/bf16-budget", f"LLaVA-OV 7B slot, bf16: methods at budget {BUDGET}", specs=methods,
                 repeats=1, followup=False, priority=1, quant="none", budget=BUDGET, **tiny),
            Part("llava-7b/4bit", "LLaVA-OV 7B slot, 4-bit NF4: dycoke", specs=["dycoke"],
                 repeats=1, followup=True, priority=2, quant="4bit", **tiny),
            Part("llava-7b/encoder", "LLaVA-OV 7B slot, bf16: selections inside the vision tower",
                 specs=[s.replace("stage=encoder", "stage=encoder,encoder_layer=1") if "encoder" in s else
                        "earlytom:encoder_layer=1" if s == "earlytom" else s for s in ENCODER],
                 repeats=1, followup=False, priority=2, quant="none", **tiny),
            Part("llava-0.5b/bf16", "LLaVA-OV 0.5B slot", specs=["none"], repeats=1, followup=True, priority=3,
                 quant="none", note="dry run: the 0.5B parts are the 7B parts' code on another spec", **tiny),
        ]
    else:
        big = dict(model=LLAVA_7B, est_load_s=90, est_measure_s=3.5)
        small = dict(model=LLAVA_05B, est_load_s=15, est_measure_s=1.5)
        parts = [
            Part("llava-7b/bf16", "LLaVA-OV 7B shapes, bf16, 32 frames: none vs dycoke",
                 specs=CORE, repeats=2, followup=True, priority=0, quant="none", **big),
            Part("llava-7b/bf16-budget", f"LLaVA-OV 7B shapes, bf16, 32 frames: methods at budget {BUDGET}",
                 specs=methods, repeats=1, followup=False, priority=1, quant="none", budget=BUDGET, **big),
            Part("llava-7b/encoder", "LLaVA-OV 7B shapes, bf16, 32 frames: selections inside the vision tower",
                 specs=ENCODER, repeats=2, followup=False, priority=2, quant="none", **big),
            Part("llava-7b/4bit", "LLaVA-OV 7B shapes, 4-bit NF4 (bf16 compute), 32 frames: none vs dycoke",
                 specs=["none", "dycoke"], repeats=2, followup=True, priority=2, quant="4bit",
                 **{**big, "est_load_s": 40, "est_measure_s": 5}),
            Part("llava-0.5b/bf16", "LLaVA-OV 0.5B shapes, bf16, 32 frames: none vs dycoke",
                 specs=CORE, repeats=2, followup=True, priority=3, quant="none", **small),
            Part("llava-0.5b/bf16-budget", f"LLaVA-OV 0.5B shapes, bf16, 32 frames: methods at budget {BUDGET}",
                 specs=methods, repeats=1, followup=False, priority=4, quant="none", budget=BUDGET, **small),
            Part("llava-0.5b/4bit", "LLaVA-OV 0.5B shapes, 4-bit NF4, 32 frames: none vs dycoke",
                 specs=["none", "dycoke"], repeats=2, followup=True, priority=5, quant="4bit",
                 **{**small, "est_load_s": 10, "est_measure_s": 2.5}),
        ]
    for i, (name, spec, tiny_spec) in enumerate(QWEN):
        if dry_run:  # the Qwen code path on the family's tiny spec: core settings and 4-bit, one round
            known = spec_known(tiny_spec)
            note = "" if known else f"{tiny_spec} is not in the random-model registry (yet): skipped"
            qwen = dict(model=tiny_spec, frames=4, tokens=4, est_load_s=3, est_measure_s=0.5, note=note)
            parts += [
                Part(f"{name}/bf16", f"{name} slot, bf16: none vs dycoke", specs=["none", "dycoke"], repeats=1,
                     followup=True, priority=6 + i, quant="none", **qwen),
                Part(f"{name}/4bit", f"{name} slot, 4-bit NF4: dycoke", specs=["dycoke"], repeats=1,
                     followup=True, priority=8 + i, quant="4bit", **qwen),
            ]
            continue
        known = spec_known(spec)
        note = "" if known else f"{spec} is not in the random-model registry (yet): skipped"
        qwen = dict(model=spec, est_load_s=100, est_measure_s=4, note=note)
        parts += [
            Part(f"{name}/bf16", f"{name} shapes, bf16, 32 frames: none vs dycoke", specs=CORE, repeats=1,
                 followup=True, priority=6 + i, quant="none", **qwen),
            Part(f"{name}/bf16-budget", f"{name} shapes, bf16, 32 frames: methods at budget {BUDGET}",
                 specs=methods, repeats=1, followup=False, priority=10 + i, quant="none", budget=BUDGET, **qwen),
            Part(f"{name}/4bit", f"{name} shapes, 4-bit NF4, 32 frames: none vs dycoke", specs=["none", "dycoke"],
                 repeats=1, followup=True, priority=8 + i, quant="4bit",
                 **{**qwen, "est_load_s": 45, "est_measure_s": 6}),
        ]
    return parts


# ---------------------------------------------------------------------------------------------- run state


class Deadline(Exception):
    pass


@dataclass
class Run:
    out: Path
    budget_s: float
    dry_run: bool
    device: str = "cpu"
    meta: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    parts: list[dict] = field(default_factory=list)  # per part: key, title, status, reason, seconds
    events: list[dict] = field(default_factory=list)  # builds, loads, skips, errors
    complete: bool = False
    stopped: str = ""

    def elapsed(self) -> float:
        return time.monotonic() - STARTED

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def event(self, kind: str, **data) -> None:
        self.events.append({"t": round(self.elapsed(), 2), "kind": kind, **data})

    def write(self) -> None:
        """results.json and RESULTS-gpu.md, each replaced atomically: readable after any crash."""
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "complete": self.complete, "stopped": self.stopped,
                "elapsed_s": round(self.elapsed(), 2), "parts": self.parts, "rows": self.rows,
                "summary": summarise(self.rows), "goals": goals(self.rows, self.dry_run), "events": self.events}
        _atomic(self.out / "results.json", json.dumps(data, indent=1, default=_plain))
        _atomic(self.out / "RESULTS-gpu.md", render_markdown(data))


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- setup


def install_wheels(wheels: Path, site: Path, run: Run) -> None:
    """pip-install the carried wheels into `site` (no index, no deps) and put it first on the path.

    Must run before anything imports transformers or bitsandbytes."""
    files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not files:
        run.event("wheels", installed=[], note=f"no wheels in {wheels}: using the installed packages")
        run.say(f"no wheels in {wheels}: using the installed packages")
        return
    started = time.monotonic()
    marker = site / ".dycoke-wheels"
    names = sorted(f.name for f in files)
    if not (marker.is_file() and marker.read_text().split() == names):
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site),
               *map(str, files)]
        subprocess.run(cmd, check=True)
        marker.write_text("\n".join(names))
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    seconds = time.monotonic() - started
    run.event("wheels", installed=names, seconds=round(seconds, 2))
    run.say(f"installed {len(files)} wheels into {site} in {seconds:.1f} s: {', '.join(names)}")


def versions() -> dict:
    import torch
    import transformers

    found = {"python": platform.python_version(), "torch": torch.__version__,
             "transformers": transformers.__version__, "cuda": torch.version.cuda,
             "transformers_from": str(Path(transformers.__file__).parent.parent)}
    try:
        import bitsandbytes

        found["bitsandbytes"] = bitsandbytes.__version__
    except Exception as exc:  # noqa: BLE001 - missing or broken: the 4-bit parts will say so
        found["bitsandbytes"] = f"unavailable ({type(exc).__name__})"
    return found


def gpu_facts() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None}
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}


def choose_cache(run: Run, need_gb: float) -> Path:
    """Where random models are materialised: RAM-backed /dev/shm when it has room (writing and reading
    16 GB there costs seconds), else the disk. Each model's folder is removed after its last part."""
    if run.dry_run:  # tiny models: the caller's cache (a test session's) or one beside the results
        return Path(os.environ.get("DYCOKE_CACHE") or run.out / "cache")
    for candidate in (Path("/dev/shm"), Path("/tmp")):
        try:
            free = shutil.disk_usage(candidate).free / 1e9
        except OSError:
            continue
        if free >= need_gb:
            run.event("cache", path=str(candidate), free_gb=round(free, 1), need_gb=need_gb)
            return candidate / "dycoke-cache"
    return Path("/tmp/dycoke-cache")


# ---------------------------------------------------------------------------------------------- frames


def synthetic_frames(count: int, size: tuple[int, int] = (360, 640), seconds: float = 10.0, fps: int = 30):
    """Decoded frames of dycoke_cli.sample_clip's clip (a bar sweeping over a drifting background),
    `count` sampled uniformly, made in numpy: what the decoder would hand over, without PyAV."""
    import numpy as np

    from dycoke_cli.video.frames import Frames

    height, width = size
    total = int(seconds * fps)
    indices = [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]
    pixels = np.empty((count, height, width, 3), np.uint8)
    for row, i in enumerate(indices):
        pixels[row] = (40 + i % 160, 90, 160 - i % 120)
        x = int((i / total) * (width - 60))
        pixels[row, height // 3: 2 * height // 3, x:x + 60] = 250
    return Frames(pixels=pixels, timestamps=[i / fps for i in indices], indices=indices, fps=float(fps),
                  duration=seconds)


# ---------------------------------------------------------------------------------------------- measuring


class Models:
    """At most one model in memory: freed before the next loads, so peaks are each model's own."""

    def __init__(self, run: Run):
        self.run = run
        self.key = None
        self.lm = None
        self.infos: dict[str, object] = {}
        self.folders: dict[str, Path] = {}
        self.measured: dict[str, list[float]] = {}  # model key -> wall seconds of its measurements
        self.broken: dict[str, str] = {}  # model -> why it could not be built: its later parts are skipped

    def get(self, part: Part):
        key = (part.model, part.dtype, part.quant)
        if key == self.key:
            return self.lm
        self.free()
        from dycoke_cli.models import inspect_model, load_model

        if part.model not in self.infos:
            started = time.monotonic()
            try:
                info = inspect_model(part.model)  # materialises the random model once (config, tokenizer, weights)
            except Exception as exc:
                self.broken[part.model] = _one_line(exc)
                raise
            build = time.monotonic() - started
            self.infos[part.model] = info
            self.folders[part.model] = Path(info.source.folder)
            size = sum(f.stat().st_size for f in Path(info.source.folder).glob("*.safetensors")) / 1e9
            self.run.event("build", model=part.model, seconds=round(build, 2), safetensors_gb=round(size, 2),
                           folder=str(info.source.folder))
            self.run.say(f"built {part.model}: {size:.1f} GB of safetensors in {build:.1f} s")
        started = time.monotonic()
        lm = load_model(self.infos[part.model], device=self.run.device, dtype=part.dtype, quant=part.quant)
        load = time.monotonic() - started
        self.run.event("load", model=part.model, dtype=lm.dtype, quant=lm.quant, seconds=round(load, 2))
        self.run.say(f"loaded {part.model} {lm.dtype} quant={lm.quant} on {lm.device} in {load:.1f} s")
        self.key, self.lm = key, lm
        warm(lm, part, self.run)
        return lm

    def free(self) -> None:
        if self.lm is None and not self.run.device.startswith("cuda"):
            return
        if self.lm is not None:
            self.lm.adapter.model = None
            self.lm = None
            self.key = None
        gc.collect()
        from dycoke_cli.stats import start_peak_window

        start_peak_window(self.run.device)

    def drop_folder(self, model: str) -> None:
        """Remove a materialised model after its last part (disk and RAM are finite there)."""
        folder = self.folders.pop(model, None)
        self.infos.pop(model, None)
        if folder is not None and not self.run.dry_run:
            shutil.rmtree(folder, ignore_errors=True)
            self.run.event("removed", model=model, folder=str(folder))


def warm(lm, part: Part, run: Run) -> None:
    """One untimed answer at the part's full frame count: kernel selection, allocator growth and lazy
    initialisation are not charged to the first measured setting."""
    from dycoke_cli.compress.spec import parse_spec
    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.settings import Generation

    started = time.monotonic()
    spec = parse_spec("none")
    video = encode_frames(lm, "synthetic", synthetic_frames(part.frames), 0.0, spec)
    Session(lm, video, spec).ask("warm up", Generation(4, 4))
    run.say(f"warm-up ({part.frames} frames, 4 tokens) in {time.monotonic() - started:.1f} s")


def measure(lm, part: Part, label: str, repeat: int, run: Run) -> dict:
    """One whole answer from frames in hand, then (if asked) a follow-up on the same encoded video."""
    from dycoke_cli.compress.base import Budget
    from dycoke_cli.compress.spec import parse_spec
    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.settings import Generation
    from dycoke_cli.stats import start_peak_window

    spec = parse_spec(label)
    if part.budget is not None:
        spec = spec.with_budget(Budget.parse(part.budget))
    frames = synthetic_frames(part.frames)
    start_peak_window(lm.device)
    started = time.monotonic()
    video = encode_frames(lm, "synthetic", frames, 0.0, spec)
    session = Session(lm, video, spec)
    answer = session.ask(QUESTION, Generation(part.tokens, part.tokens))
    s = answer.stats.to_dict()
    row = {
        "part": part.key, "model": part.model, "dtype": lm.dtype, "quant": lm.quant, "device": lm.device,
        "frames": part.frames, "new_tokens": part.tokens, "method": spec.method, "spec": spec.label,
        "setting": label if part.budget is None else spec.label,  # as the plan names it: "dycoke:p=0"
        "budget": part.budget, "repeat": repeat,
        "visual_tokens_before": s["visual_tokens_before"], "visual_tokens_after": s["visual_tokens_after"],
        "prompt_tokens": s["prompt_tokens"], "generated_tokens": s["generated_tokens"],
        "preprocess_s": s["preprocess_s"], "vision_encode_s": s["vision_encode_s"], "ttm_s": s["compress_s"],
        "prefill_s": s["prefill_s"], "ttft_s": s["time_to_first_token_s"], "decode_s": s["decode_s"],
        "decode_tokens_per_s": s["decode_tokens_per_s"], "total_s": s["total_s"],
        "kv_entries_attended_mean": s["kv_entries_attended_mean"],
        "peak_allocated_bytes": s.get("peak_gpu_allocated_bytes"),
        "peak_reserved_bytes": s.get("peak_gpu_reserved_bytes"), "peak_rss_bytes": s.get("peak_rss_bytes"),
    }
    if part.followup:
        follow = session.ask(FOLLOWUP, Generation(4, 4)).stats
        row.update(followup_ttft_s=follow.time_to_first_token_s, followup_prefill_tokens=follow.prefill_tokens,
                   followup_reused_tokens=follow.prefix_reused_tokens)
    row["wall_s"] = round(time.monotonic() - started, 3)
    return row


def progress_line(row: dict) -> str:
    peak = ""
    if row.get("peak_allocated_bytes") is not None:
        peak = f", peak {row['peak_allocated_bytes'] / 2**30:.2f}/{row['peak_reserved_bytes'] / 2**30:.2f} GiB alloc/res"
    elif row.get("peak_rss_bytes") is not None:
        peak = f", peak RSS {row['peak_rss_bytes'] / 2**30:.2f} GiB"
    follow = f", follow-up TTFT {row['followup_ttft_s']:.3f} s" if "followup_ttft_s" in row else ""
    return (f"{row['part']} {row['setting']} r{row['repeat']}: TTFT {row['ttft_s']:.3f} s (vision "
            f"{row['vision_encode_s']:.3f}, TTM {row['ttm_s']:.3f}, prefill {row['prefill_s']:.3f}), "
            f"{row['visual_tokens_after']}/{row['visual_tokens_before']} visual tokens, decode "
            f"{row['decode_tokens_per_s']:.1f} tok/s, total {row['total_s']:.3f} s{peak}{follow}")


def estimate(part: Part, models: Models, scale: float) -> float:
    loaded = models.key == (part.model, part.dtype, part.quant)
    done = models.measured.get(part.model)
    per = (sum(done) / len(done)) if done else part.est_measure_s * scale
    return (0.0 if loaded else part.est_load_s * scale) + per * part.repeats * len(part.specs)


def run_part(part: Part, models: Models, run: Run, record: dict) -> None:
    from dycoke_cli.errors import is_out_of_memory

    lm = models.get(part)
    for repeat in range(1, part.repeats + 1):
        for label in part.specs:
            try:
                row = measure(lm, part, label, repeat, run)
            except Deadline:
                raise
            except Exception as exc:  # noqa: BLE001 - one setting failing must not cost the others
                if is_out_of_memory(exc):
                    models.free()
                    lm = models.get(part)
                run.rows.append({"part": part.key, "model": part.model, "quant": part.quant, "setting": label,
                                 "repeat": repeat, "error": _one_line(exc)})
                run.say(f"{part.key} {label} r{repeat}: FAILED {_one_line(exc)}")
                run.write()
                continue
            models.measured.setdefault(part.model, []).append(row["wall_s"])
            run.rows.append(row)
            run.say(progress_line(row))
            run.write()
    record["status"] = "done"


def _one_line(exc: BaseException) -> str:
    from dycoke_cli.errors import describe

    return describe(exc)[:300]


def execute(parts: list[Part], run: Run) -> None:
    models = Models(run)
    last_use = {part.model: i for i, part in enumerate(parts) if not part.note}
    scale = 1.0
    for i, part in enumerate(parts):
        record = {"key": part.key, "title": part.title, "model": part.model, "quant": part.quant,
                  "priority": part.priority, "status": "pending", "reason": ""}
        run.parts.append(record)
        if part.model in models.broken:
            part.note = f"{part.model} could not be built: {models.broken[part.model]}"
        if part.note:
            record.update(status="skipped", reason=part.note)
            run.say(f"skip {part.key}: {part.note}")
            run.write()
            continue
        need = estimate(part, models, scale)
        reserve = sum(estimate(q, models, scale) for q in parts[i + 1:] if q.priority < part.priority and not q.note)
        if run.left() - reserve < need:
            record.update(status="skipped", reason=f"deadline: {run.left():.0f} s left, {reserve:.0f} s reserved "
                                                   f"for more important parts, this one needs ~{need:.0f} s")
            run.say(f"skip {part.key}: {record['reason']}")
            run.write()
        else:
            run.say(f"part {part.key}: {part.title} (~{need:.0f} s estimated, {run.left():.0f} s left)")
            started = time.monotonic()
            try:
                run_part(part, models, run, record)
            except Deadline:
                record.update(status="stopped", reason="deadline reached during the part")
                raise
            except Exception as exc:  # noqa: BLE001 - a model that fails to build or load
                record.update(status="failed", reason=_one_line(exc))
                run.event("error", part=part.key, error=_one_line(exc), trace=traceback.format_exc()[-2000:])
                run.say(f"part {part.key} FAILED: {_one_line(exc)}")
                models.free()
            spent = time.monotonic() - started
            record["seconds"] = round(spent, 2)
            if need > 0 and record["status"] == "done":
                scale = min(3.0, max(0.5, 0.5 * scale + 0.5 * spent / need * scale))
        if last_use.get(part.model) == i or (part.model in models.folders and
                                              all(q.model != part.model or q.note for q in parts[i + 1:])):
            models.free()
            models.drop_folder(part.model)
        run.write()
    models.free()


# ---------------------------------------------------------------------------------------------- report

METRICS_MIN = ("preprocess_s", "vision_encode_s", "ttm_s", "prefill_s", "ttft_s", "decode_s", "total_s",
               "followup_ttft_s")
METRICS_MAX = ("decode_tokens_per_s", "peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes")


def summarise(rows: list[dict]) -> list[dict]:
    """One line per (part, setting): best of the repeats (lowest time, highest rate) and the highest peak."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault((row["part"], row["setting"]), []).append(row)
    out = []
    for (part, setting), members in groups.items():
        first = members[0]
        line = {k: first[k] for k in ("part", "model", "dtype", "quant", "frames", "new_tokens", "setting",
                                      "method", "budget", "visual_tokens_before", "visual_tokens_after",
                                      "prompt_tokens")}
        line["repeats"] = len(members)
        for key in METRICS_MIN:
            values = [m[key] for m in members if m.get(key) is not None]
            line[key] = min(values) if values else None
        for key in METRICS_MAX:
            values = [m[key] for m in members if m.get(key) is not None]
            line[key] = max(values) if values else None
        out.append(line)
    for line in out:  # ratios against `none` of the same model and quantization, in the same process
        base = next((b for b in out if b["model"] == line["model"] and b["quant"] == line["quant"]
                     and b["setting"] == "none" and b["part"].split("/")[0] == line["part"].split("/")[0]), None)
        line["ttft_gain_vs_none"] = _ratio(base and base["ttft_s"], line["ttft_s"])
        line["prefill_gain_vs_none"] = _ratio(base and base["prefill_s"], line["prefill_s"])
    return out


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _line(summary, part, setting):
    return next((s for s in summary if s["part"] == part and s["setting"] == setting), None)


def goals(rows: list[dict], dry_run: bool) -> list[dict]:
    """The project's GPU goals (a benchmark: reported, never asserted). 7B shapes, 32 frames, H200."""
    summary = summarise(rows)
    none, dyc = _line(summary, "llava-7b/bf16", "none"), _line(summary, "llava-7b/bf16", "dycoke")
    no_dp = _line(summary, "llava-7b/bf16", "dycoke:p=0")
    q4 = _line(summary, "llava-7b/4bit", "dycoke")
    out = []

    def add(goal, value, target, ok, unit=""):
        out.append({"goal": goal, "measured": None if value is None else round(value, 4), "unit": unit,
                    "target": target, "met": None if value is None else bool(ok(value))})

    add("time to first token none/dycoke (7B bf16)", _ratio(none and none["ttft_s"], dyc and dyc["ttft_s"]),
        ">= 1.7x", lambda v: v >= 1.7, "x")
    add("time to first token with DyCoke (7B bf16, excl. video decode)", dyc and dyc["ttft_s"], "<= 0.5 s",
        lambda v: v <= 0.5, "s")
    overhead = None
    if dyc and no_dp and dyc["decode_tokens_per_s"] and no_dp["decode_tokens_per_s"]:
        overhead = 100.0 * (no_dp["decode_tokens_per_s"] / dyc["decode_tokens_per_s"] - 1)
    add("DP decode overhead (dycoke vs dycoke:p=0, 7B bf16)", overhead, "<= 5 %", lambda v: v <= 5, "%")
    encoder_none = _line(summary, "llava-7b/encoder", "none")
    best = min((line for line in summary if line["part"] == "llava-7b/encoder" and "budget" not in line["setting"]
                and line["setting"] not in ("none", "dycoke") and line.get("ttft_s")),
               key=lambda line: line["ttft_s"], default=None)
    add("time to first token none / best selection inside the tower (7B bf16, 32 frames)",
        _ratio(encoder_none and encoder_none["ttft_s"], best and best["ttft_s"]), ">= 2.1x", lambda v: v >= 2.1, "x")
    peak = q4 and (q4["peak_reserved_bytes"] or q4["peak_rss_bytes"])
    add("peak memory, 4-bit + DyCoke (7B, reserved)", peak and peak / 1e9, "<= 8 GB", lambda v: v <= 8, "GB")
    if dry_run:
        for goal in out:
            goal["note"] = "dry run: tiny model on the CPU, not the goal's shapes"
    return out


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _gib(value):
    return "-" if value is None else f"{value / 2**30:.2f}"


def render_markdown(data: dict) -> str:
    meta = data["meta"]
    lines = ["# GPU results" + (" (DRY RUN: tiny models on the CPU)" if meta.get("dry_run") else ""), ""]
    lines.append(f"{meta.get('gpu') or 'no GPU'}; " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
                 + f"; started {meta.get('started', '?')}; {data['elapsed_s']:.0f} s of a {meta.get('budget_s')} s budget"
                 + ("" if data["complete"] else f"; INCOMPLETE{': ' + data['stopped'] if data['stopped'] else ''}"))
    lines += ["", "Random weights at real shapes; decoded synthetic frames (640x360) in hand, video decoding "
              "excluded. TTFT = preprocess + vision encode + TTM/selection + prefill; prefill alone is its own "
              "column. Best of the repeats per setting; gains are none / setting, measured in the same process.", ""]
    lines += ["## Goals", "", "| goal | measured | target | met |", "|---|---:|---|---|"]
    for g in data["goals"]:
        met = "-" if g["met"] is None else ("yes" if g["met"] else "NO")
        lines.append(f"| {g['goal']} | {_fmt(g['measured'])} {g['unit'] if g['measured'] is not None else ''} | "
                     f"{g['target']} | {met} |")
    by_part: dict[str, list[dict]] = {}
    for line in data["summary"]:
        by_part.setdefault(line["part"], []).append(line)
    for part in data["parts"]:
        lines += ["", f"## {part['key']}: {part['title']}", ""]
        if part["status"] != "done":
            lines.append(f"Status: {part['status']}. {part.get('reason', '')}".rstrip())
        rows = by_part.get(part["key"], [])
        if rows:
            first = rows[0]
            lines += [f"{first['model']}, {first['dtype']}, quant {first['quant']}, {first['frames']} frames, "
                      f"{first['new_tokens']} new tokens" + (f", budget {first['budget']}" if first["budget"] else ""),
                      "",
                      "| setting | visual tokens | vision encode (s) | TTM (s) | prefill (s) | TTFT (s) | TTFT gain "
                      "| decode tok/s | total (s) | follow-up TTFT (s) | peak alloc (GiB) | peak reserved (GiB) "
                      "| peak RSS (GiB) | repeats |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                gain = f"{r['ttft_gain_vs_none']:.2f}x" if r["ttft_gain_vs_none"] else "-"
                lines.append(
                    f"| {r['setting']} | {r['visual_tokens_after']:,}/{r['visual_tokens_before']:,} | "
                    f"{_fmt(r['vision_encode_s'])} | {_fmt(r['ttm_s'])} | {_fmt(r['prefill_s'])} | "
                    f"{_fmt(r['ttft_s'])} | {gain} | {_fmt(r['decode_tokens_per_s'], 1)} | {_fmt(r['total_s'])} | "
                    f"{_fmt(r['followup_ttft_s'])} | {_gib(r['peak_allocated_bytes'])} | "
                    f"{_gib(r['peak_reserved_bytes'])} | {_gib(r['peak_rss_bytes'])} | {r['repeats']} |")
        errors = [r for r in data["rows"] if r.get("part") == part["key"] and "error" in r]
        for r in errors:
            lines.append(f"- {r['setting']} (repeat {r['repeat']}) failed: {r['error']}")
    steps = [e for e in data["events"] if e["kind"] in ("wheels", "build", "load", "removed", "error", "cache")]
    if steps:
        lines += ["", "## Setup and model builds", ""]
        for e in steps:
            detail = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("t", "kind", "trace"))
            lines.append(f"- at {e['t']:.0f} s, {e['kind']}: {detail}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-results"))
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting work after this many seconds from start (default 420)")
    parser.add_argument("--grace-s", type=float, default=25.0, help="hard stop this long after the budget")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, 4 frames, 4 tokens")
    parser.add_argument("--wheels", type=Path, default=None,
                        help=f"wheels to install first (default {WHEELS.relative_to(ROOT)}; none in a dry run)")
    parser.add_argument("--site", type=Path, default=Path("/tmp/dycoke-site"))
    parser.add_argument("--only", default="", help="comma-separated part keys (e.g. llava-7b/bf16)")
    parser.add_argument("--list", action="store_true", help="print the plan with estimates and exit")
    args = parser.parse_args(argv)

    run = Run(out=args.out, budget_s=args.budget_s, dry_run=args.dry_run)
    run.meta = {"dry_run": args.dry_run, "budget_s": args.budget_s, "host": platform.node(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]}
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing outside the GPU machine can be reached
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def hard_stop(signum, frame):
        raise Deadline(f"signal {signum}")

    if hasattr(signal, "SIGALRM") and not args.list:
        signal.signal(signal.SIGALRM, hard_stop)
        signal.alarm(max(1, int(args.budget_s + args.grace_s - run.elapsed())))
    signal.signal(signal.SIGTERM, hard_stop)

    status = 0
    try:
        wheels = args.wheels if args.wheels is not None else (None if args.dry_run else WHEELS)
        if wheels is not None and not args.list:
            install_wheels(wheels, args.site, run)
        import torch

        run.meta["versions"] = versions()
        run.meta.update(gpu_facts())
        run.say(f"{run.meta.get('gpu') or 'no GPU'}; {run.meta['versions']}")
        from dycoke_cli.video.frames import Frames  # noqa: F401 - the engine path, without PyAV

        if args.dry_run:
            run.device = "cpu"
            torch.set_num_threads(1)  # tiny models: one thread beats several on a shared CPU
        elif args.list:
            pass
        elif not torch.cuda.is_available():
            run.stopped = "no CUDA GPU (use --dry-run on a CPU)"
            run.say(run.stopped)
            run.write()
            return 2
        else:
            run.device = "cuda:0"
            major = tuple(int(x) for x in run.meta["versions"]["transformers"].split(".")[:2])
            if major < (5, 23):
                run.stopped = (f"transformers {run.meta['versions']['transformers']} < 5.23: run prepare.sh here "
                               f"and carry {WHEELS.relative_to(ROOT)}")
                run.say(run.stopped)
                run.write()
                return 2
        parts = build_plan(args.dry_run)
        if args.only:
            wanted = {k.strip() for k in args.only.split(",") if k.strip()}
            parts = [p for p in parts if p.key in wanted]
        print("plan (priority, part, model, quant, runs, estimate):", flush=True)
        for p in parts:
            n = p.repeats * len(p.specs)
            print(f"  {p.priority:>2} {p.key:<26} {p.model:<30} {p.quant:<5} {n:>2} runs, ~{p.est_load_s:.0f} s "
                  f"load + ~{n * p.est_measure_s:.0f} s{'  [' + p.note + ']' if p.note else ''}", flush=True)
        if args.list:
            return 0
        # one model's folder at a time (each is removed after its last part): qwen3-vl-8b is ~17.5 GB in bf16
        need = max([20 if "7b" in p.model or "8b" in p.model else 3 for p in parts if not p.note] or [3])
        os.environ["DYCOKE_CACHE"] = str(choose_cache(run, need + 6))
        run.meta["dycoke_cache"] = os.environ["DYCOKE_CACHE"]
        run.write()
        execute(parts, run)
        run.complete = not any(p["status"] in ("skipped", "failed", "stopped") and "registry" not in p["reason"]
                               and "dry run" not in p["reason"] for p in run.parts)
    except Deadline as exc:
        run.stopped = f"hard stop at {run.elapsed():.0f} s ({exc})"
        run.say(run.stopped)
    except Exception as exc:  # noqa: BLE001 - e.g. the wheels do not install: say so in the results too
        run.stopped = f"crashed at {run.elapsed():.0f} s: {_one_line(exc)}"
        run.event("error", error=_one_line(exc), trace=traceback.format_exc()[-3000:])
        run.say(run.stopped)
        traceback.print_exc()
        status = 1
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
        run.meta["pyav_imported"] = "av" in sys.modules  # the engine path must not need PyAV (none there)
        if not args.list:
            run.write()
    if not args.list:
        print_summary(run)
    return status


def print_summary(run: Run) -> None:
    """The last lines of output: what a caller that only sees the tail needs."""
    print("\n== summary (best of repeats) ==", flush=True)
    for line in summarise(run.rows):
        gain = f" gain {line['ttft_gain_vs_none']:.2f}x" if line["ttft_gain_vs_none"] else ""
        peak = line["peak_reserved_bytes"] or line["peak_rss_bytes"]
        print(f"{line['part']:<24} {line['setting']:<22} TTFT {_fmt(line['ttft_s'])} s{gain}, prefill "
              f"{_fmt(line['prefill_s'])} s, decode {_fmt(line['decode_tokens_per_s'], 1)} tok/s, "
              f"peak {_gib(peak)} GiB")
    for g in goals(run.rows, run.dry_run):
        print(f"goal: {g['goal']}: {_fmt(g['measured'])} {g['unit']} (target {g['target']}) "
              f"{'-' if g['met'] is None else ('met' if g['met'] else 'NOT met')}")
    print(f"wrote {run.out / 'results.json'} and {run.out / 'RESULTS-gpu.md'}; "
          f"{'complete' if run.complete else 'incomplete'}; {run.elapsed():.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
