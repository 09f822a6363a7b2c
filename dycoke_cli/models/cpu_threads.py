"""How many threads each layer of a CPU model runs with: chosen by timing the layers before it.

Why. A transformer layer is a few dozen parallel regions (matrix products, attention, norms), and an
OpenMP team waits at the end of every region for its slowest thread. When another process holds a
core, one of our threads is off the core for a scheduler slice at a time and every region waits for
it: on a 2-core AMD EPYC with other work running, a bf16 decode step took 0.5-1.5 s with two threads
and 70-160 ms with one, and a 221-token prefill 4-6 s instead of 0.5 s. On an idle machine two threads
are faster. Load comes and goes, so the count is measured, not assumed.

How. The layers of a stack (the language model's decoder layers, the vision tower's encoder layers)
do the same work, so the time of one predicts the next. A forward pre-hook on each layer times the
one before it, per row of input (so prefills of different lengths compare) and per phase (decode
steps of at most DECODE_ROWS rows; longer inputs), and sets the count of the next layer. One layer's
time is noisy under load (a decode layer is shorter than a scheduler slice: with other work running,
two-thread decode layers took 1.4 to 104 ms, median 33, one-thread ones median 2.5), so a count is
tried for WINDOW layers in a row and judged by the median of its last WINDOW. A count never tried is
tried first; then the fastest is used, and a slower one is tried again once the time since its last
trial is 1/REGRET times what the trial would cost: trying costs at most ~2% on an idle machine, and a
count that collapsed under load is retried rarely. The process's count is restored after a prefill's
stack (for a language model after its output head); a decode step's count is kept through generate's
own work until the generation ends (cpu_decode.DecodePath.generating): under load, that work on the
process's two threads added 20-40 ms to a 130 ms step.

Results must not depend on the count, and that was measured per kernel: in bf16 every kernel of a
layer gives the same bits with one or two threads; in fp32 the matrix-vector products and the grouped
decode attention (decode_attention.py) do, but SDPA and small matrix products do not (differences
~1e-7). So `auto` tunes every phase of a bf16 model, only decode steps of another dtype when they
attend through the grouped kernel, and nothing else. `DYCOKE_THREADS=tune` tunes every phase of
every dtype; `DYCOKE_THREADS=N` pins N threads in these stacks.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from dycoke_cli.errors import SettingsError

ENV = "DYCOKE_THREADS"
DECODE_ROWS = 8  # inputs of at most this many rows are decode steps (their own timings)
REGRET = 0.02
WINDOW = 5  # layers per trial; a count is judged by the median of its last WINDOW layers
INVARIANT_DTYPES = ("bfloat16",)  # where every layer kernel was measured to give the same bits at any count


def thread_counts(cores: int) -> tuple[int, ...]:
    """All cores, then halved down to one: 8 -> (8, 4, 2, 1)."""
    counts = [max(1, cores)]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return tuple(counts)


@dataclass
class ThreadTuner:
    """Which thread count the next layer runs with, from the timings of earlier layers.

    One layer's time is noisy under load (a scheduler slice is longer than a decode layer), so a count
    is judged by the median of its last WINDOW layers, and trying a count means running it for WINDOW
    layers in a row (a trial). samples[c]: per-row seconds of c's last layers; since[c]: seconds of
    layers timed since c's last trial began.
    """

    counts: tuple[int, ...]
    samples: dict = field(default_factory=dict)
    since: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)  # threads -> layers timed with them
    trial: list = field(default_factory=list)  # the counts of the next layers, while a trial runs

    def estimate(self, count: int) -> float:
        return statistics.median(self.samples[count])

    def record(self, threads: int, per_row: float, took: float) -> None:
        for count in self.since:
            self.since[count] += took
        window = self.samples.setdefault(threads, [])
        window.append(per_row)
        del window[:-WINDOW]
        self.layers[threads] = self.layers.get(threads, 0) + 1

    def pick(self, rows: int = 1) -> int:
        """The count for a layer of `rows` rows."""
        if self.trial:
            return self.trial.pop(0)
        for count in self.counts:
            if not self.samples.get(count):
                return self._try(count)
        fastest = min(self.counts, key=self.estimate)
        for count in self.counts:  # a trial of `count` costs WINDOW * (its time - the fastest's) * rows
            extra = WINDOW * (self.estimate(count) - self.estimate(fastest)) * rows
            if count != fastest and REGRET * self.since[count] >= extra:
                return self._try(count)
        return fastest

    def _try(self, count: int) -> int:
        self.samples[count], self.since[count] = [], 0.0
        self.trial = [count] * (WINDOW - 1)
        return count


@dataclass
class StackClock:
    """The pre-hooks of one stack of equal layers, and what they last saw."""

    name: str
    counts: tuple[int, ...]
    phases: frozenset  # the phases ("decode", "prefill") whose thread count is chosen; others keep `default`
    default: int
    on_decode_step: Callable[[float], None] | None = None  # called at layer 0 of a decode step
    tuners: dict = field(default_factory=dict)  # phase -> ThreadTuner
    clock: Callable[[], float] = time.perf_counter
    handles: list = field(default_factory=list)
    stock: bool = False  # every layer at `default` (side-by-side measurements); decode steps are still timed
    _last: tuple | None = None  # (layer index, start, threads, rows, phase)
    _step_start: float | None = None  # layer 0 of the last decode step, if the forward before was one

    def before(self, index: int, rows: int) -> None:
        import torch

        phase = "decode" if rows <= DECODE_ROWS else "prefill"
        now = self.clock()
        if index == 0:
            if phase == "decode" and self._step_start is not None and self.on_decode_step is not None:
                self.on_decode_step(now - self._step_start)
            self._step_start = now if phase == "decode" else None
        if self.stock or phase not in self.phases:
            threads = self.default
        else:
            tuner = self.tuners.setdefault(phase, ThreadTuner(self.counts))
            last = self._last
            if last is not None and last[0] == index - 1 and last[3:] == (rows, phase):
                tuner.record(last[2], (now - last[1]) / rows, now - last[1])
            threads = tuner.pick(rows) if len(self.counts) > 1 else self.counts[0]
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self._last = (index, self.clock(), threads, rows, phase)

    def after_stack(self) -> None:
        """After the last layer (or the head). A prefill hands the process its count back; a decode step
        keeps the count its last layer ran with, so that generate's own work between steps (the logits'
        copy, the stopping test, the streamer: small parallel regions that stall on a loaded machine as
        layers do) runs on it too, until `restore` when the generation ends."""
        if self.stock or self._last is None or self._last[4] != "decode" or "decode" not in self.phases:
            self.restore()

    def restore(self) -> None:
        import torch

        if torch.get_num_threads() != self.default:
            torch.set_num_threads(self.default)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _rows(args, kwargs) -> int:
    hidden = args[0] if args else kwargs.get("hidden_states")
    return hidden.numel() // hidden.shape[-1] if hidden is not None and hidden.dim() else 0


def attach(name: str, layers: list, counts: tuple[int, ...], phases, after=None,
           on_decode_step: Callable[[float], None] | None = None) -> StackClock:
    """Time `layers` and choose each one's threads in `phases`; restore the process's count after the last
    layer, or after module `after` (a language model's head, which then runs with the decode count too)."""
    import torch

    clock = StackClock(name=name, counts=counts, phases=frozenset(phases), default=torch.get_num_threads(),
                       on_decode_step=on_decode_step)
    for index, layer in enumerate(layers):
        clock.handles.append(layer.register_forward_pre_hook(
            lambda module, args, kwargs, i=index: clock.before(i, _rows(args, kwargs)), with_kwargs=True))
    end = after if after is not None else layers[-1]
    clock.handles.append(end.register_forward_hook(lambda module, args, output: clock.after_stack()))
    return clock


def read_override() -> str:
    """auto | tune | N from DYCOKE_THREADS; a bad value is a SettingsError."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value in ("auto", "tune") or (value.isdigit() and int(value) >= 1):
        return value
    raise SettingsError(f"{ENV}={value!r}: expected auto, tune or a thread count of at least 1")


def choose(override: str, dtype: str, cores: int, invariant_decode: bool) -> tuple[tuple[int, ...], frozenset, str]:
    """(thread counts to choose from, the phases they are chosen in, the -v line). Pure.

    invariant_decode: the decode step's attention gives the same bits at any thread count (the grouped
    decode kernel does in every dtype; the matrix-vector products do too), so decode may be tuned even
    where prefill may not.
    """
    both = frozenset({"decode", "prefill"})
    if override.isdigit():
        return (int(override),), both, f"threads: {override} in every layer (set by {ENV})"
    counts = thread_counts(cores)
    if len(counts) == 1:
        return counts, frozenset(), "threads: 1 (the process runs one: nothing to choose)"
    choice = f"{' or '.join(map(str, counts))} per layer, whichever ran the last timed layers fastest"
    if override == "tune" or dtype in INVARIANT_DTYPES:
        how = f"set by {ENV}" if override == "tune" else f"{ENV}=N pins"
        return counts, both, f"threads: {choice} ({how})"
    if invariant_decode:
        return counts, frozenset({"decode"}), (f"threads: {choice} in decode steps; {cores} in prefill and the "
                                               f"vision tower, whose {dtype} sums depend on the count "
                                               f"({ENV}=tune tunes them too)")
    return counts, frozenset(), (f"threads: {cores}; not tuned in {dtype}, where attention's sums depend on the "
                                 f"count ({ENV}=tune tunes anyway)")
