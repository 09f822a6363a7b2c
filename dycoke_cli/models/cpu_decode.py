"""How the language model decodes on the CPU: which kernels a decode step runs, chosen by a probe.

Why. A decode step multiplies one activation row by every weight matrix of the language model: it
reads all the weights once and does about one FLOP per byte, so memory bandwidth bounds it, not
arithmetic. The stock kernels do not get there (2-core AMD EPYC Zen 4 with AVX512_BF16, 13-17 GB/s
streaming reads beside other work; numbers and commands in benchmarks/RESULTS.md, "The CPU at its
limits"): bf16 `F.linear` on one row reads 5-9 GB/s a core, fp32 reads twice the bytes, and SDPA
spends more on one query's attention over a long cache than the layer's weights cost. So two kernels are chosen here, by one probe (a pass over 35M
weights in each linear kernel and one decode attention over 2,048 cached tokens, on one core; cached
per processor and torch version beside the dtype probe):
1. Linears, under `--dtype auto` only (an explicit --dtype runs every stage in that dtype): fbgemm's
   packed fp16 kernel (packed_fp16.py) where the probe finds it at least MARGIN times faster than
   the model's dtype and the fp16 copy fits in MEMORY_SHARE of the memory available; else the dtype's
   own. `DYCOKE_DECODE_KERNEL=fp16` packs everything at load, `=dtype` never packs.
2. Attention: grouped products (decode_attention.py) where the probe finds them no slower than SDPA in
   the model's dtype. `DYCOKE_DECODE_ATTENTION=grouped|sdpa` overrides.

Packing costs ~6 ns a weight (seconds for a 0.5B model), and only decoding pays it back, so it is
bought the way a renter buys skis: each decode step earns the time a packed model would have saved
on it (its time x (1 - 1/speedup) from the probe), and row blocks are packed as the earnings cover
their measured cost. A short answer packs little and costs at most that share more than the stock
path; a long answer or a batch ends up packed. The thread count of every layer is cpu_threads.py's
concern; its clock on the language model's layers times the decode steps this file is paid by.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from dycoke_cli.errors import SettingsError
from dycoke_cli.models.packed_fp16 import (fits_fp16, fp16_available, fp16_linear, next_block_weights, pack_fp16,
                                           pack_next_block, packable, unpack_module)
from dycoke_cli.render import format_bytes

KERNEL_ENV = "DYCOKE_DECODE_KERNEL"
KERNELS = ("auto", "fp16", "dtype")
ATTENTION_ENV = "DYCOKE_DECODE_ATTENTION"
ATTENTIONS = ("auto", "grouped", "sdpa")
MARGIN = 1.2  # the packed kernel is used where the probe finds it at least this much faster
MEMORY_SHARE = 0.5  # and where its fp16 copy fits in this share of the memory available after load
PROBE_SHAPE = (8, 4864, 896)  # 8 Qwen2-0.5B MLP matrices: 35M weights, 70 MB in 2 bytes, past the L3
ATTENTION_SHAPE = (14, 2, 2048, 64)  # heads, KV heads, cached tokens, head size: Qwen2-0.5B at 2k tokens
PROBE_REPEATS = 5
PROBE_NAME = "decode-v2"


# ---------------------------------------------------------------- the kernel probe and choice


@dataclass(frozen=True)
class KernelTiming:
    """Seconds of one pass over the probe's weights per kernel ("bfloat16", "float32", "fp16"), and of
    packing them for fp16."""

    seconds: dict
    pack_s: float
    params: int
    cached: bool = False

    def speedup(self, dtype: str) -> float:
        """How many times faster the packed kernel ran than `dtype`'s F.linear."""
        fp16, other = self.seconds.get("fp16"), self.seconds.get(dtype)
        return other / fp16 if fp16 and other else 0.0


@dataclass(frozen=True)
class KernelChoice:
    kernel: str  # "fp16" | "dtype"
    reason: str
    eager: bool = False  # pack everything at load (asked for) instead of as decoding pays for it

    @property
    def line(self) -> str:
        return f"decode kernel: {self.kernel} ({self.reason})"


def choose_kernel(dtype: str, timing: KernelTiming | None, override: str = "auto", explicit_dtype: bool = False,
                  extra_bytes: int = 0, available_bytes: int | None = None) -> KernelChoice:
    """The decode kernel for a model loaded in `dtype` on the CPU. Pure: flags and timings in, choice out."""
    if override == "fp16":
        return KernelChoice("fp16", f"set by {KERNEL_ENV}; packed at load", eager=True)
    if override == "dtype":
        return KernelChoice("dtype", f"set by {KERNEL_ENV}")
    if explicit_dtype:
        return KernelChoice("dtype", f"--dtype {dtype} given: every stage in {dtype}")
    if timing is None or "fp16" not in timing.seconds:
        return KernelChoice("dtype", "packed fp16 kernel unavailable in this torch build")
    how = "cached probe" if timing.cached else "probe"
    speedup = timing.speedup(dtype)
    if speedup < MARGIN:
        return KernelChoice("dtype", f"{how}: packed fp16 only {speedup:.2f}x the speed of {dtype} F.linear")
    if available_bytes is not None and extra_bytes > MEMORY_SHARE * available_bytes:
        return KernelChoice("dtype", f"{how}: packed fp16 {speedup:.1f}x faster, but its copy "
                                     f"({format_bytes(extra_bytes)}) would take over half the "
                                     f"{available_bytes / 2**30:.1f} GiB available")
    return KernelChoice("fp16", f"{how}: {speedup:.1f}x faster than {dtype} F.linear on one row; weights "
                                f"packed as decoding pays for it, up to {format_bytes(extra_bytes)}")


@dataclass(frozen=True)
class AttentionChoice:
    kernel: str  # "grouped" | "sdpa" | another implementation the model was loaded with
    reason: str

    @property
    def line(self) -> str:
        return f"decode attention: {self.kernel} ({self.reason})"


def choose_attention(dtype: str, timing: KernelTiming | None, override: str = "auto",
                     implementation: str = "sdpa") -> AttentionChoice:
    """How a decode step attends over the cache: grouped products (decode_attention.py) unless SDPA ran
    faster on the probe in this dtype; a model loaded with another attention than SDPA keeps it. Pure."""
    if implementation != "sdpa":
        return AttentionChoice(implementation, f"the model was loaded with {implementation} attention")
    if override in ATTENTIONS[1:]:
        return AttentionChoice(override, f"set by {ATTENTION_ENV}")
    sdpa_s = timing.seconds.get(f"sdpa {dtype}") if timing else None
    grouped_s = timing.seconds.get(f"grouped {dtype}") if timing else None
    if not sdpa_s or not grouped_s:
        return AttentionChoice("sdpa", f"not probed in {dtype}")
    how = "cached probe" if timing.cached else "probe"
    if grouped_s > sdpa_s:
        return AttentionChoice("sdpa", f"{how}: grouped products {grouped_s / sdpa_s:.1f}x slower than SDPA")
    return AttentionChoice("grouped", f"{how}: {sdpa_s / grouped_s:.1f}x faster than SDPA over "
                                      f"{ATTENTION_SHAPE[2]:,} cached tokens in {dtype}")


def probe(shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = PROBE_REPEATS) -> KernelTiming:
    """Time, interleaved, best of `repeats`: one pass of a single-row product over `count` (N, K)
    matrices in bf16, fp32 and (where this torch has it) packed fp16; and one decode step's attention
    over ATTENTION_SHAPE in SDPA and as grouped products, per dtype."""
    import torch
    import torch.nn.functional as F

    from dycoke_cli.models import decode_attention

    count, n, k = shape
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(n, k, generator=generator) * 0.02 for _ in range(count)]
    x = torch.randn(1, 1, k, generator=generator)
    bf16 = [w.bfloat16() for w in weights]
    kernels: dict[str, Callable[[], object]] = {
        "bfloat16": lambda: [F.linear(x.bfloat16(), w) for w in bf16],
        "float32": lambda: [F.linear(x, w) for w in weights],
    }
    pack_s = 0.0
    if fp16_available():
        try:
            started = time.perf_counter()
            packed = [pack_fp16(w) for w in bf16]
            pack_s = time.perf_counter() - started
            kernels["fp16"] = lambda: [fp16_linear(x[0], blocks) for blocks in packed]
        except RuntimeError:  # listed but not built for this processor: the linears keep their dtype
            pass
    heads, kv_heads, length, dim = ATTENTION_SHAPE
    module = torch.nn.Module()
    module.num_key_value_groups = heads // kv_heads
    for dtype in ("bfloat16", "float32"):
        q, kv = (torch.randn(1, h, s, dim, generator=generator).to(getattr(torch, dtype))
                 for h, s in ((heads, 1), (kv_heads, length)))
        kernels[f"sdpa {dtype}"] = lambda q=q, kv=kv: F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
        kernels[f"grouped {dtype}"] = lambda q=q, kv=kv: decode_attention.attend(module, q, kv, kv, None)
    best = {name: float("inf") for name in kernels}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # kernels compared on one core: another process's load cannot stall a team
    try:
        with torch.inference_mode():
            for run in kernels.values():  # warm-up
                run()
            for _ in range(repeats):
                for name, run in kernels.items():
                    start = time.perf_counter()
                    run()
                    best[name] = min(best[name], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return KernelTiming(seconds=best, pack_s=pack_s, params=count * n * k)


def cached_probe(path=None) -> KernelTiming:
    """The kernel probe for this processor and torch version: from the cache, else measured and stored."""
    from dycoke_cli.models import cpu_dtype

    path = path or cpu_dtype.cache_path()
    key = cpu_dtype.cache_key(cpu_dtype.read_cpu(), PROBE_NAME)
    entry = cpu_dtype.read_entry(path, key)
    try:
        return KernelTiming(seconds={k: float(v) for k, v in entry["seconds"].items()}, pack_s=float(entry["pack_s"]),
                            params=int(entry["params"]), cached=True)
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    timing = probe()
    cpu_dtype.store_entry(path, key, {"seconds": timing.seconds, "pack_s": timing.pack_s, "params": timing.params})
    return timing


# ---------------------------------------------------------------- packing as decoding pays for it


@dataclass
class DecodePath:
    """The decode kernel of one loaded model, and how far its packing has got.

    pending: linear modules not yet wholly packed (kernel fp16 only), layers first, the head last;
    credit: decode seconds a packed model would have saved so far, not yet spent on packing.
    clocks: the thread clocks of its layer stacks (models/cpu_threads.py).
    """

    kernel: KernelChoice
    attention: AttentionChoice | None = None
    layers: list = field(default_factory=list)  # the decoder layers, whose attention modules take the kernel
    implementation: str = "sdpa"  # the attention implementation the language model runs (transformers' name)
    pending: list = field(default_factory=list)
    packed: list = field(default_factory=list)
    saving: float = 0.0  # share of a step's time the packed kernel saves (1 - 1 / speedup on the probe)
    pack_s_per_weight: float = 0.0  # packing cost on the probe
    credit: float = 0.0
    pack_s: float = 0.0  # spent packing so far
    clocks: list = field(default_factory=list)
    clock: Callable[[], float] = time.perf_counter
    stock: bool = False  # decoding the stock way (side-by-side measurements): steps earn nothing, nothing packs

    @contextmanager
    def generating(self):
        """Around one generation: the decode steps' thread count holds between steps (cpu_threads.py) and
        the process's own comes back at the end, however the generation ends."""
        try:
            yield self
        finally:
            for clock in self.clocks:
                clock.restore()

    def pack_all(self) -> None:
        while self.pending:
            self._pack_next()

    def use_stock(self, stock: bool = True) -> None:
        """Decode the stock way (F.linear in the model's dtype, SDPA, the process's thread count in every
        layer), or (False) the chosen way with everything packed: side-by-side measurements in one process."""
        from dycoke_cli.models import decode_attention

        self.stock = stock
        if stock:
            self.unpack_all()
        elif self.kernel.kernel == "fp16":
            self.pack_all()
        grouped = not stock and self.attention is not None and self.attention.kernel == "grouped"
        for layer in self.layers:
            if grouped:
                layer.self_attn.dycoke_decode_attention = decode_attention.attend
            else:
                layer.self_attn.__dict__.pop("dycoke_decode_attention", None)
        for clock in self.clocks:
            clock.stock = stock

    def unpack_all(self) -> None:
        """Back to the stock kernels (for side-by-side measurements); packing starts over."""
        for module in self.packed + self.pending:
            unpack_module(module)
        self.pending, self.packed, self.credit = self.packed + self.pending, [], 0.0

    def after_step(self, took: float) -> None:
        """Earn one decode step's saving (`took`: its seconds); pack the row blocks the earnings cover."""
        if not self.pending or self.stock:
            return
        self.credit += took * self.saving
        while self.pending and self.credit >= next_block_weights(self.pending[0]) * self.pack_s_per_weight:
            self.credit -= self._pack_next()

    def _pack_next(self) -> float:
        """Pack one row block of the first pending module (one out of fp16's range keeps its stock
        kernel); the seconds it took."""
        module = self.pending[0]
        start = self.clock()
        if "dycoke_blocks" not in module.__dict__ and not fits_fp16(module):
            self.pending.pop(0)
        elif pack_next_block(module):
            self.packed.append(self.pending.pop(0))
        spent = self.clock() - start
        self.pack_s += spent
        return spent


# ---------------------------------------------------------------- set-up at load


def read_overrides() -> tuple[str, str]:
    """(kernel, attention) from DYCOKE_DECODE_KERNEL and DYCOKE_DECODE_ATTENTION; a bad value is a
    SettingsError (raised before any weight loads)."""
    values = []
    for env, allowed in ((KERNEL_ENV, KERNELS), (ATTENTION_ENV, ATTENTIONS)):
        value = os.environ.get(env, "").strip().lower() or "auto"
        if value not in allowed:
            raise SettingsError(f"{env}={value!r}: expected one of {', '.join(allowed)}")
        values.append(value)
    return values[0], values[1]


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (Linux); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def linear_modules(model, layers: list) -> list:
    """The language model's linears: every nn.Linear of its decoder layers, then the output head."""
    import torch

    found, seen = [], set()
    for module in [m for layer in layers for m in layer.modules()] + [model.get_output_embeddings()]:
        if isinstance(module, torch.nn.Linear) and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def vision_stacks(model) -> list:
    """The vision side's longest list of equal layers (SigLIP's encoder layers, Qwen's blocks), if any."""
    import torch

    from dycoke_cli.models.cpu_dtype import VISION_PARTS

    inner = getattr(model, "model", model)
    best: list = []
    for name in VISION_PARTS:
        part = getattr(inner, name, None)
        if not isinstance(part, torch.nn.Module):
            continue
        for module in part.modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) > max(1, len(best)) \
                    and len({type(m) for m in module}) == 1:
                best = list(module)
    return [best] if best else []


def prepare(model, layers: list, dtype: str, explicit_dtype: bool, notes: list[str],
            overrides: tuple[str, str] = ("auto", "auto"), threads: str = "auto",
            implementation: str = "sdpa") -> DecodePath:
    """Choose the decode kernels (linears, attention) and the per-layer threads of an un-quantized CPU
    model, install them, and note why in `notes`. implementation: the attention the model was loaded
    with; the grouped decode kernel replaces only SDPA, and `path.implementation` is what the language
    model runs afterwards."""
    import torch

    from dycoke_cli.compress import attention
    from dycoke_cli.models import cpu_threads, decode_attention

    kernel, attention_override = overrides
    wanted = kernel == "fp16" or (kernel == "auto" and not explicit_dtype)
    modules = [m for m in linear_modules(model, layers) if packable(m)] if wanted else []
    if kernel == "fp16" and not (modules and fp16_available()):
        raise SettingsError(f"{KERNEL_ENV}=fp16: this torch build or model has no linear the packed fp16 "
                            "kernel can take")
    timing = None
    if (modules and kernel == "auto") or attention_override == "auto":
        try:
            timing = cached_probe()
        except Exception:  # noqa: BLE001 - a probe that cannot run must never stop a load
            timing = None
    choice = choose_kernel(dtype, timing, kernel, explicit_dtype, 2 * sum(m.weight.numel() for m in modules),
                           available_memory())
    path = DecodePath(kernel=choice)
    if choice.kernel == "fp16":
        path.pending = modules
        if timing is not None:
            path.saving = max(0.0, 1.0 - 1.0 / timing.speedup(dtype))
            path.pack_s_per_weight = timing.pack_s / timing.params
        if choice.eager:
            path.pack_all()
    path.attention = attend = choose_attention(dtype, timing, attention_override, implementation)
    path.layers = list(layers)
    path.implementation = implementation
    if attend.kernel == "grouped":  # the language model runs SDPA with the grouped kernel for decode steps
        path.implementation = decode_attention.register()
        attention.switch_implementation(model, path.implementation)
        for layer in layers:
            layer.self_attn.dycoke_decode_attention = decode_attention.attend
    cores = torch.get_num_threads()
    counts, phases, line = cpu_threads.choose(threads, dtype, cores, attend.kernel == "grouped")
    if phases or path.pending:  # the language model's clock also paces the packing
        path.clocks.append(cpu_threads.attach("language model", layers, counts, phases,
                                              after=model.get_output_embeddings(), on_decode_step=path.after_step))
    if "prefill" in phases:
        path.clocks += [cpu_threads.attach("vision", stack, counts, {"prefill"}) for stack in vision_stacks(model)]
    notes += [choice.line, attend.line]
    if len(counts) > 1 or not any(note.startswith("threads:") for note in notes):  # loading may have said why 1
        notes.append(line)
    return path
