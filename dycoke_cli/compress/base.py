"""The contract between the engine and a compression method.

A method acts at up to three points, each optional, and declares its parameters once:

  frame_subset   before the vision tower: which decoded frames to encode at all (`uniform`);
  select         before prefill: given the per-frame visual tokens (F, T, D) and where they sit, the
                 flat indices to keep (and optionally clusters to average, for `dynamics`);
  attention      inside the language model: a hook the registered attention function dispatches to,
                 at prefill and/or decode (DyCoke's DP, FastV).

Everything here is free of torch at import time: the CLI parses and validates a `--compress` spec,
prints `--help` and writes the man page from these declarations before anything heavy is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from dycoke_cli.errors import SettingsError

if TYPE_CHECKING:
    import torch

    from dycoke_cli.compress.attention import AttentionHook, HookContext


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its type, range or choices, default and one-line help."""

    name: str
    kind: type  # float, int or str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes `low`
    high_open: bool = False  # the range excludes `high`
    choices: tuple[str, ...] = ()

    def parse(self, text: str, where: str) -> Any:
        """A value as typed on the command line -> the checked value."""
        if self.kind is str:
            value: Any = text
        else:
            try:
                value = self.kind(text)
            except ValueError:
                noun = "an integer" if self.kind is int else "a number"
                raise SettingsError(f"{where}: {self.name} needs {noun}, got '{text}'") from None
        return self.check(value, where)

    def check(self, value: Any, where: str) -> Any:
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or isinstance(value, bool):
            raise SettingsError(f"{where}: {self.name} must be {self.domain()}, got {value!r}")
        if self.choices and value not in self.choices:
            raise SettingsError(f"{where}: {self.name} must be one of {', '.join(self.choices)}, got '{value}'")
        if self.kind is float and not math.isfinite(value):
            raise SettingsError(f"{where}: {self.name} must be a finite number, got {value}")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if below or above:
            raise SettingsError(f"{where}: {self.name} must be in {self.domain()}, got {value}")
        return value

    def domain(self) -> str:
        """The accepted values in words: "[0, 1)", ">= 1", "reuse | released"."""
        if self.choices:
            return " | ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "an integer" if self.kind is int else "a number" if self.kind is float else "text"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Budget:
    """`--budget B`: at most B visual tokens reach the language model. B in (0, 1) is a share of the
    video's visual tokens, an integer >= 1 a count."""

    value: float

    @classmethod
    def parse(cls, text: str) -> "Budget":
        where = f"--budget '{text}'"
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{where}: expected a share in (0, 1) or a token count >= 1") from None
        return cls.of(value, where)

    @classmethod
    def of(cls, value: float, where: str = "budget") -> "Budget":
        if not math.isfinite(value) or value <= 0:
            raise SettingsError(f"{where}: must be a share in (0, 1) or a token count >= 1, got {value}")
        if value >= 1 and not float(value).is_integer():
            raise SettingsError(f"{where}: a count must be a whole number of tokens, got {value}")
        return cls(value)

    @property
    def is_share(self) -> bool:
        return self.value < 1

    def tokens(self, total: int) -> int:
        """The budget in tokens for a video of `total` visual tokens (a share rounds down, to >= 1)."""
        if self.is_share:
            return max(1, math.floor(self.value * total))
        if self.value > total:
            raise SettingsError(f"--budget {int(self.value)} is above the video's {total} visual tokens")
        return int(self.value)

    def __str__(self) -> str:
        return _num(self.value)


@dataclass(frozen=True)
class VisualLayout:
    """Where a video's tokens sit, as a method sees it (every method works on these F "frames").

    frames: F. For Qwen a frame is a temporal group of `group` input frames merged into one grid.
    grid: (h, w) tokens of one frame, raster order; T = h * w.
    times: seconds of each frame's first input frame.
    positions: (F, T) prompt position of every token in the unpruned prompt (frames may be separated
               by text, e.g. Qwen3-VL's timestamps), or None where no prompt is built yet.
    """

    frames: int
    grid: tuple[int, int]
    times: tuple[float, ...] = ()
    group: int = 1
    positions: "torch.Tensor | None" = None

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def total(self) -> int:
        return self.frames * self.tokens_per_frame


@dataclass
class Selection:
    """What reaches the language model: rows `keep` of the flattened (F*T, D) tokens, in LM order.

    keep: (N,) int64. Tokens of one frame must stay within that frame's run and frames in temporal
          order (a prompt may hold text between frames); within a frame any order is allowed.
    merge: (F*T,) int64 or None: cluster id in [0, N) of every token (-1: dropped). When given, kept
          row i is the mean of its cluster's members (on every per-token feature level) and sits at
          the position of the token keep[i].
    counters: what the method wants reported, as plain numbers.
    """

    keep: "torch.Tensor"
    merge: "torch.Tensor | None" = None
    counters: dict = field(default_factory=dict)


class Method:
    """Base of every compression method; subclasses declare `name`, `summary`, `params` and override
    the hooks they use. An instance holds validated parameter values and the budget."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help and the man page
    params: ClassVar[tuple[Param, ...]] = ()
    budget_solves: ClassVar[str | None] = None  # the parameter --budget replaces (None: no budget)
    question_dependent: ClassVar[bool] = False  # the prompt's KV depends on the question: no prefix reuse

    def __init__(self, values: Mapping[str, Any] | None = None, budget: Budget | None = None):
        given = dict(values or {})
        self.values = {p.name: given.get(p.name, p.default) for p in self.params}
        self.budget = budget
        self.solved: dict[str, Any] = {}  # parameters derived from the budget, once known

    # ------------------------------------------------------------------ declarations

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def effective(self) -> dict:
        """The parameters this run used: the declared values, then whatever the budget solved."""
        return {**self.values, **self.solved}

    def label(self) -> str:
        """`method:key=value,...` with the effective parameters (and the budget), reproducible."""
        pairs = [f"{k}={v}" for k, v in self.effective().items()]
        if self.budget is not None:
            pairs.append(f"budget={self.budget}")
        return self.name + (":" + ",".join(pairs) if pairs else "")

    # ------------------------------------------------------------------ checks before weights load

    def check_model(self, layers: int, min_prune_layer: int = 0) -> None:
        """Settings that depend on the model (e.g. a layer index against its depth); `layers` is the
        language model's depth, `min_prune_layer` the first layer whose sequence may shrink."""

    # ------------------------------------------------------------------ hooks

    def frame_subset(self, frames: int, tokens_per_frame: int, group: int) -> list[int] | None:
        """Indices of the decoded frames to encode (None: all). `group` input frames make one frame."""
        return None

    def select(self, tokens: "torch.Tensor", layout: VisualLayout) -> Selection | None:
        """tokens: (F, T, D). The rows to keep (None: all, in order)."""
        return None

    def attention(self, context: "HookContext") -> "AttentionHook | None":
        """A hook inside the language model for one generate call (None: plain attention)."""
        return None

    def budget_tokens(self, total: int) -> int | None:
        return None if self.budget is None else self.budget.tokens(total)

    def expected_tokens(self, layout: VisualLayout) -> int:
        """Visual tokens this method lets through for a video of this shape, known before encoding
        (for the context check); methods whose count depends on the content return an upper bound."""
        return layout.total if self.budget is None else min(layout.total, self.budget.tokens(layout.total))
