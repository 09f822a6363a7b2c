"""The contract between the engine and a compression method.

A method acts at up to four points, each optional, and declares its parameters once:

  frame_subset   before the vision tower: which decoded frames to encode at all (`uniform`);
  select_cells   inside the vision tower: at encoder layer j (`encoder_layer`), given every frame's
                 hidden states grouped by the token each group becomes (a cell), the cells to keep;
                 the tower's later layers then run on the kept cells' patches only;
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
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

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
    """`--budget B`: at most B visual tokens reach the language model.

    Two kinds, told apart by how they are written so that no value means both: a SHARE of the video's
    visual tokens has a decimal point or a percent sign (`0.25`, `.25`, `25%`; `1.0` and `100%` keep
    everything); a COUNT is a bare whole number (`300`). A count above the video's tokens keeps all of
    them (`exceeds` says so, for a note). `rate=` keys of the methods are the other direction: the
    share DROPPED.
    """

    share: float | None = None  # in (0, 1]
    count: int | None = None  # >= 1

    @classmethod
    def parse(cls, text: str, where: str | None = None) -> "Budget":
        """A budget as typed on the command line or in a spec."""
        raw = str(text).strip()
        where = where or f"--budget '{raw}'"
        number = raw[:-1].strip() if raw.endswith("%") else raw
        if not raw.endswith("%") and number.isascii() and number.lstrip("+-").isdigit():
            return cls.of(int(number), where)  # a bare whole number: a count
        try:
            value = float(number) if number.isascii() else math.nan
        except ValueError:
            value = math.nan
        if math.isnan(value):
            raise SettingsError(f"{where}: {BUDGET_GRAMMAR}")
        return cls.of(value / 100 if raw.endswith("%") else value, where)

    @classmethod
    def of(cls, value: float | int, where: str = "budget") -> "Budget":
        """A Python int is a count, a float a share (so `Budget.of(1.0)` keeps everything)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: {BUDGET_GRAMMAR}")
        if isinstance(value, int):
            if value < 1:
                raise SettingsError(f"{where}: a count must be at least 1 token, got {value}")
            if value > MAX_COUNT:
                raise SettingsError(f"{where}: a count must be at most {MAX_COUNT:,} tokens, got {value:,}")
            return cls(count=value)
        if not math.isfinite(value) or not 0 < value <= 1:
            raise SettingsError(f"{where}: a share must be in (0, 1] (or (0%, 100%]), got {value:g}; "
                                "a count is a whole number without a decimal point")
        return cls(share=float(value))

    @property
    def is_share(self) -> bool:
        return self.share is not None

    @property
    def value(self) -> float | int:
        """The share or the count, as JSON reports it."""
        return self.share if self.share is not None else self.count

    def tokens(self, total: int) -> int:
        """The budget in tokens for a video of `total` visual tokens: a share rounds down (to >= 1), a
        count above the total keeps the total."""
        if self.share is not None:
            return max(1, math.floor(self.share * total))
        return min(self.count, total)

    def exceeds(self, total: int) -> bool:
        """A count larger than the video's tokens (then every token is kept)."""
        return self.count is not None and self.count > total

    def __str__(self) -> str:
        """As it would be typed: a share always with its decimal point ("1.0", not "1")."""
        if self.share is None:
            return str(self.count)
        return "1.0" if self.share == 1 else repr(self.share)


BUDGET_GRAMMAR = ("expected a share with a decimal point or a percent sign (0.25, 25%; 1.0 keeps everything) "
                  "or a whole number of tokens (300)")
MAX_COUNT = 10**9  # far past any context window
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed takes


def kept_rate(kept: int, total: int, count: Callable[[float], int]) -> float:
    """The drop rate to report for a method that kept `kept` of `total` tokens under a budget: the
    shortest decimal r in [0, 1) whose own rule `count(r)` keeps exactly `kept`, so that the reported
    `rate=r` reproduces the selection without the budget (1 - kept/total itself where it does; where
    no r does, because the rule's floor is above `kept`, 1 - kept/total to four places)."""
    plain, halfway = 1 - kept / total, 1 - (kept + 0.5) / total
    for target in (plain, halfway):
        for digits in range(2, 10):
            candidate = round(target, digits)
            if 0 <= candidate < 1 and count(candidate) == kept:
                return candidate
    return min(round(plain, 4), 0.9999)


@dataclass(frozen=True)
class VisualLayout:
    """A video's visual tokens as a method sees them (every method works on these F "frames").

    frames: F. For Qwen a frame is a temporal group of `group` input frames merged into one grid.
    grid: (h, w) tokens of one frame, raster order; T = h * w.
    times: seconds of each frame's first input frame.
    inputs: decoded frames behind the F frames (0: F * group); an odd count of Qwen frames is padded.
    """

    frames: int
    grid: tuple[int, int]
    times: tuple[float, ...] = ()
    group: int = 1
    inputs: int = 0

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def total(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def input_frames(self) -> int:
        return self.inputs or self.frames * self.group


# The tower layer a selection inside it sits at by default: vLLM's inner-ViT EVS example (layer 8 of
# Qwen2.5-VL's 32) and EarlyTom's first prune layer (6 to 10 of SigLIP's 26) are both near 8.
ENCODER_LAYER = 8

STAGE_PARAMS = (
    Param("stage", str, "prefill", "prefill: select from the tower's output; encoder: select inside the tower at "
          "encoder_layer, whose later layers then run on the kept cells only", choices=("prefill", "encoder")),
    Param("encoder_layer", int, ENCODER_LAYER, "with stage=encoder: the tower layer j whose hidden states the "
          "method reads (layers from j on run on the kept cells)", low=0),
)


@dataclass
class EncoderCells:
    """The vision tower's hidden states at encoder layer j, grouped by the language-model token each
    group of patches becomes (a cell: a LLaVA-OneVision pooled token, a Qwen 2x2 merge group, a
    SmolVLM2 pixel-shuffle group).

    hidden: (F, C, K, D) per frame, per cell (raster order over the token grid), its K patches.
    weights: (C, K) how the tower pools a cell's patches into its token (LLaVA-OneVision's bilinear
             pooling), or None where the K patches are concatenated (Qwen's merger, SmolVLM2's shuffle).
    layout: F frames (Qwen: temporal groups) of grid (h, w) cells, their times.
    """

    hidden: "torch.Tensor"
    weights: "torch.Tensor | None"
    layout: VisualLayout
    attention: "torch.Tensor | None" = None  # (F, C, K) attention each patch receives at layer j, if asked for

    def attention_received(self) -> "torch.Tensor":
        """(F, C) float32 the attention a cell's patches receive, pooled as the tower pools them (their
        mean where it concatenates them)."""
        attention = self.attention.float()
        if self.weights is None:
            return attention.mean(2)
        return (attention * self.weights.to(attention)[None]).sum(2)

    def vectors(self) -> "torch.Tensor":
        """(F, C, D') one float32 vector per cell: its patches pooled as the tower pools them, or
        concatenated where the tower concatenates them."""
        hidden = self.hidden.float()
        if self.weights is None:
            return hidden.flatten(2)  # (F, C, K*D)
        return (hidden * self.weights.to(hidden)[None, :, :, None]).sum(2)  # (F, C, D)


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
    the hooks they use. An instance holds validated parameter values and the budget, and nothing else:
    every hook is a pure function of those, the layout and its inputs, so a method can be planned,
    reported and run in any order, any number of times."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help and the man page
    params: ClassVar[tuple[Param, ...]] = ()
    budget_solves: ClassVar[str | None] = None  # the parameter --budget replaces (None: no budget)
    question_dependent: ClassVar[bool] = False  # the prompt's KV depends on the question: no prefix reuse
    reads_attention: ClassVar[bool] = False  # select_cells needs EncoderCells.attention (the tower's, at layer j)

    def __init__(self, values: Mapping[str, Any] | None = None, budget: Budget | None = None):
        given = dict(values or {})
        self.values = {p.name: given.get(p.name, p.default) for p in self.params}
        self.budget = budget

    # ------------------------------------------------------------------ declarations

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def solve(self, layout: VisualLayout) -> dict:
        """The parameters a run on a video of this layout uses: the declared values, with the one the
        budget replaces (`budget_solves`) solved for it. Raises SettingsError where the budget cannot be
        met."""
        if self.budget is None:
            return dict(self.values)
        return {**self.values, self.budget_solves: self.solved(layout)}

    def solved(self, layout: VisualLayout) -> Any:
        """The value of `budget_solves` under the budget, within its declared range (methods that take
        a budget implement it)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checks before weights load

    def check_model(self, layers: int, min_prune_layer: int = 0) -> None:
        """Settings that depend on the model (e.g. a layer index against its depth); `layers` is the
        language model's depth, `min_prune_layer` the first layer whose sequence may shrink."""

    # ------------------------------------------------------------------ hooks

    def frame_subset(self, layout: VisualLayout) -> list[int] | None:
        """Indices of the decoded frames to encode (None: all); `layout` is the whole sampled video."""
        return None

    def encoder_layer(self) -> int | None:
        """The vision-tower layer j at which `select_cells` acts (None: this method acts after the
        tower, if at all). Layers 0..j-1 run on every patch, layers j.. on the kept cells' patches.
        A method declaring STAGE_PARAMS acts there when given stage=encoder."""
        if self.values.get("stage") == "encoder":
            return self.values["encoder_layer"]
        return None

    def encoding_settings(self) -> tuple | None:
        """What of this method changes the encoded features (its selection inside the tower), None:
        nothing. Equal settings share an encoding."""
        if self.encoder_layer() is None:
            return None
        return (self.name, tuple(sorted(self.values.items())), str(self.budget))

    def select_cells(self, cells: EncoderCells) -> "torch.Tensor":
        """(N,) int64 flat indices into the F*C cells to keep, ascending (methods with an encoder
        layer implement it). Every later stage sees only these cells' tokens."""
        raise NotImplementedError

    def select(self, tokens: "torch.Tensor", layout: VisualLayout) -> Selection | None:
        """tokens: (F, T, D). The rows to keep (None: all, in order)."""
        return None

    def attention(self, context: "HookContext") -> "AttentionHook | None":
        """A hook inside the language model for one generate call (None: plain attention)."""
        return None

    def budget_tokens(self, total: int) -> int | None:
        return None if self.budget is None else self.budget.tokens(total)

    def expected_tokens(self, layout: VisualLayout) -> int:
        """Visual tokens this method lets through of the frames it encodes (`layout`, after its frame
        subset), known before encoding (for the context check); methods whose count depends on the
        content return an upper bound."""
        return layout.total if self.budget is None else self.budget.tokens(layout.total)
