"""Which dtype this CPU computes fastest in: `--dtype auto` on the CPU.

Processors differ. With native bf16 (x86 AMX or AVX512_BF16) bf16 matrix products beat fp32 and
halve the memory; without it (e.g. AVX-512 Skylake/Cascade Lake, AVX2 parts) PyTorch emulates bf16
by converting to fp32 and a product runs several times slower than in fp32 (a SigLIP tower: 18.2 s
against 4.5 s for 2 frames). The vision tower and the prefill, which make the time to the first
token, are matrix products, so the choice is made on a matrix product:

1. `DYCOKE_CPU_DTYPE=bfloat16|float32` overrides everything.
2. The fast path: /proc/cpuinfo (or torch's own CPUID check) lists amx_bf16 or avx512_bf16 -> bf16.
3. Otherwise a probe times a bf16 and an fp32 product at a vision-tower shape (interleaved, best of
   several; ~0.1-0.3 s once) and bf16 is kept unless it is more than SLOWER_LIMIT times slower. The
   timings are cached in $DYCOKE_CACHE (else ~/.cache/dycoke)/cpu-dtype.json, keyed by the CPU model,
   its bf16 flags and the torch version, so later runs read a file instead of measuring.

`choose` holds the decision and is pure (flags and timings in, choice out) so it can be tested
without timing anything. `-v` prints `CpuDtype.line`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "DYCOKE_CPU_DTYPE"
OVERRIDES = ("bfloat16", "float32")
NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # x86 CPUID flags as Linux names them
# bf16 is kept where it is at most this much slower than fp32 on the probe: it halves the weights'
# memory and a small loss on matrix products is within the probe's noise. Without native bf16 the
# measured ratio is 3-6x, with it below 1.
SLOWER_LIMIT = 1.3
# (M, K, N) of the probe: 256 patch tokens through a SigLIP-so400m projection (1152 -> 1152). A few
# milliseconds in fp32 on two cores; large enough that per-call overhead does not decide.
PROBE_SHAPE = (256, 1152, 1152)
PROBE_REPEATS = 5
CACHE_FILE = "cpu-dtype.json"
CACHE_VERSION = 1


@dataclass(frozen=True)
class CpuInfo:
    model: str  # e.g. "Intel(R) Xeon(R) Processor @ 2.00GHz"
    flags: frozenset[str]  # the bf16-relevant flags present (subset of NATIVE_BF16)
    known: bool  # whether the flags could be read at all (else only the probe can tell)


@dataclass(frozen=True)
class Timing:
    bf16_s: float
    fp32_s: float
    cached: bool = False

    @property
    def ratio(self) -> float:
        """How many times slower bf16 ran than fp32 (below 1: faster)."""
        return self.bf16_s / self.fp32_s if self.fp32_s > 0 else 1.0


@dataclass(frozen=True)
class CpuDtype:
    dtype: str  # "bfloat16" | "float32"
    reason: str  # why, for -v

    @property
    def line(self) -> str:
        return f"dtype: {self.dtype} on this CPU ({self.reason})"


def choose(info: CpuInfo, timing: Timing | None = None, override: str | None = None) -> CpuDtype:
    """The dtype for --dtype auto on the CPU, from what is known about the processor. Pure."""
    ignored = ""
    if override:
        value = override.strip().lower()
        value = {"bf16": "bfloat16", "fp32": "float32"}.get(value, value)
        if value in OVERRIDES:
            return CpuDtype(value, f"set by {ENV}")
        ignored = f"; {ENV}={override!r} ignored (bfloat16 or float32)"
    choice = _choose(info, timing)
    return CpuDtype(choice.dtype, choice.reason + ignored) if ignored else choice


def _choose(info: CpuInfo, timing: Timing | None) -> CpuDtype:
    native = [f for f in NATIVE_BF16 if f in info.flags]
    if native:
        return CpuDtype("bfloat16", f"native bf16: {'/'.join(native)}")
    lacking = "no avx512_bf16/amx" if info.known else "bf16 support unknown"
    if timing is None:  # nothing measured (the probe failed): keep the historical default
        return CpuDtype("bfloat16", f"{lacking}; bf16 matmul not measured")
    how = "cached probe" if timing.cached else "measured"
    if timing.ratio > SLOWER_LIMIT:
        return CpuDtype("float32", f"{lacking}: bf16 matmul {how} {timing.ratio:.1f}x slower")
    if timing.ratio >= 1:
        return CpuDtype("bfloat16", f"{lacking}: bf16 matmul {how} only {timing.ratio:.1f}x slower; "
                                    "bf16 halves memory")
    return CpuDtype("bfloat16", f"{lacking}: bf16 matmul {how} {1 / timing.ratio:.1f}x faster")


def parse_cpuinfo(text: str) -> tuple[str, set[str], bool]:
    """(model name, flags, whether they are x86 flags) from the text of /proc/cpuinfo. Pure."""
    model, flags, known = "", set(), False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags, known = set(value.split()), key == "flags"  # "Features": Arm names, judged by the probe
    return model, flags, known


def read_cpu() -> CpuInfo:
    """The processor's name and bf16 flags: /proc/cpuinfo on Linux, torch's CPUID checks elsewhere."""
    try:
        model, flags, known = parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        model, flags, known = "", set(), False
    if not known:
        try:
            import torch

            if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
                if torch.cpu._is_avx512_bf16_supported():
                    flags.add("avx512_bf16")
                if torch.cpu._is_amx_tile_supported():
                    flags.add("amx_bf16")  # AMX tiles come with AMX-BF16 on every part that has them
                known = True
        except (ImportError, AttributeError, RuntimeError):
            pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return CpuInfo(model=model, flags=frozenset(f for f in flags if f in NATIVE_BF16), known=known)


def probe(shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = PROBE_REPEATS) -> Timing:
    """Best-of-`repeats` time of one (M, K) @ (K, N) product in bf16 and in fp32, interleaved so
    that a burst of load from other processes hits both."""
    import torch

    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    pairs = {"fp32": (a32, b32), "bf16": (a32.bfloat16(), b32.bfloat16())}
    best = {name: float("inf") for name in pairs}
    with torch.inference_mode():
        for name, (a, b) in pairs.items():  # warm-up: kernel selection, packing buffers
            a @ b
        for _ in range(repeats):
            for name, (a, b) in pairs.items():
                start = time.perf_counter()
                a @ b
                best[name] = min(best[name], time.perf_counter() - start)
    return Timing(bf16_s=best["bf16"], fp32_s=best["fp32"])


def cache_path() -> Path:
    """$DYCOKE_CACHE/cpu-dtype.json, else ~/.cache/dycoke/cpu-dtype.json (where random models live)."""
    from dycoke_cli.paths import cache_root

    return cache_root() / CACHE_FILE


def cache_key(info: CpuInfo, probe_name: str = f"v{CACHE_VERSION}") -> str:
    """One entry per probe, processor (name and bf16 flags) and torch version."""
    import torch

    return f"{probe_name}|{info.model}|{','.join(sorted(info.flags))}|torch {torch.__version__}"


def cached_timing(info: CpuInfo, path: Path | None = None) -> Timing:
    """The probe's timing for this CPU and torch: read from the cache, else measured and stored."""
    path = path or cache_path()
    key = cache_key(info)
    try:
        entry = read_entry(path, key)
        if entry:
            return Timing(bf16_s=float(entry["bf16_s"]), fp32_s=float(entry["fp32_s"]), cached=True)
    except (ValueError, TypeError, KeyError):
        pass
    timing = probe()
    store_entry(path, key, {"bf16_s": timing.bf16_s, "fp32_s": timing.fp32_s, "ratio": round(timing.ratio, 3)})
    return timing


def read_entry(path: Path, key: str) -> dict | None:
    """One probe's cached entry, or None when the file is missing, damaged or lacks the key."""
    try:
        entry = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) else None


def store_entry(path: Path, key: str, entry: dict) -> None:
    """Add one entry to the cache file, atomically; a cache that cannot be written is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads(path.read_text())
            entries = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            entries = {}
        entries[key] = {**entry, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1))
        tmp.replace(path)
    except OSError:
        pass


def cpu_dtype() -> CpuDtype:
    """The dtype for --dtype auto on this CPU, with the reason (override, flags, or the cached probe)."""
    override = os.environ.get(ENV, "").strip() or None
    if override and override.lower() in OVERRIDES + ("bf16", "fp32"):
        return choose(CpuInfo("", frozenset(), False), override=override)
    info = read_cpu()
    if any(f in info.flags for f in NATIVE_BF16):
        return choose(info, override=override)
    try:
        timing = cached_timing(info)
    except Exception:  # noqa: BLE001 - a probe that cannot run must never stop a load
        timing = None
    return choose(info, timing, override)


VISION_PARTS = ("vision_tower", "visual", "vision_model", "multi_modal_projector", "connector", "image_newline")


def cast_vision(model, dtype: str) -> list[str]:
    """Cast the vision side (tower, projector, LLaVA's image_newline) of a loaded model to `dtype`,
    leaving the language model as loaded; returns the names cast. These parts are never quantized
    (bitsandbytes skips them), so this is safe under --quant too."""
    import torch

    target = getattr(torch, dtype)
    inner = getattr(model, "model", model)
    done = []
    for name in VISION_PARTS:
        part = getattr(inner, name, None)
        if isinstance(part, torch.nn.Parameter):
            part.data = part.data.to(target)
        elif isinstance(part, torch.nn.Module):
            part.to(target)
        else:
            continue
        done.append(name)
    return done
