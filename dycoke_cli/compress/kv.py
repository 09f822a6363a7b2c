"""Dynamic KV-cache pruning (DP), DyCoke's decode stage: later layers attend to the visual tokens that matter now.

While the answer is generated, each new token attends over the whole cache, and with video most of
the cache is visual tokens. DyCoke scores them by the new token's own attention at layer L-1 and
lets layers L..N-1 attend only to the top (1 - P) share of visual positions plus every non-visual
one. The cache itself is never modified: each step gathers its subset, so a token dropped at one
step can be picked again at the next. DP saves attention work, not memory.

How it plugs in (see shared/TRANSFORMERS_NOTES.md): every transformers 5.x decoder calls a
registered attention function after updating the cache, with the layer module, the post-RoPE query
and the FULL cached K/V. We register one under ATTENTION_NAME that is stock SDPA unless a pruner is
active and the call is a decode step (query length 1). Keys are cached after RoPE, so a gathered
subset needs no position fix-up.

Gate: the released code compares this step's visual-attention vector with the previous step's
(cosine). Below the threshold it selects anew; at or above it either reuses the previous indices
(`reuse`, our default) or runs the step on the full cache (`released`). The previous vector is
updated every step, whatever was decided, as in the released code.

The active pruner is a module global, not a ContextVar: a streaming engine runs generate() in a
worker thread, which would not inherit a context variable. One generation at a time, batch size 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dycoke_cli.errors import SettingsError

ATTENTION_NAME = "dycoke_dp"
GATES = ("reuse", "released")

_ACTIVE: DecodePruner | None = None
_SDPA: Callable | None = None  # transformers' stock sdpa_attention_forward, imported on first use


@dataclass(frozen=True)
class DPConfig:
    """Settings of decode-time pruning. p = 0 disables it (every step attends to the full cache)."""

    p: float = 0.7  # pruning rate of visual KV entries at decode
    layer: int = 3  # L: layers 0..L-1 see the full cache, scoring happens at layer L-1 (0-based)
    gate: str = "reuse"  # "reuse" | "released"
    threshold: float = 0.9  # cosine between consecutive steps' visual attention

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise SettingsError(f"DP pruning rate P must be between 0 and 1, got {self.p}.")
        if self.layer < 1:
            raise SettingsError(f"DP layer L must be at least 1 (scoring happens at layer L-1), got {self.layer}.")
        if self.gate not in GATES:
            raise SettingsError(f"Unknown DP gate {self.gate!r}; choose one of: {', '.join(GATES)}.")
        if self.threshold != self.threshold:  # NaN would make every comparison false
            raise SettingsError("DP gate threshold must be a number, got NaN.")


@dataclass
class DecodePruner:
    """State of DP for one `pruning` block (one question): what each decode step kept, and why.

    attended[i]: KV entries that layers >= L attended to at decode step i (the full length when the
    step ran unpruned). kept_visual[i]: absolute positions of the visual entries kept at step i, or
    None for a full step (a reused step shares its tensor with the step that selected it).
    selected / reused / full: how many steps selected anew, reused the previous indices, ran full.
    """

    config: DPConfig
    visual_span: tuple[int, int]
    attended: list[int] = field(default_factory=list)
    kept_visual: list[torch.Tensor | None] = field(default_factory=list)
    selected: int = 0
    reused: int = 0
    full: int = 0
    _prev_scores: torch.Tensor | None = field(default=None, init=False, repr=False)  # (n_visual,) float32
    _last_visual: torch.Tensor | None = field(default=None, init=False, repr=False)  # (n_keep,) positions
    _keep: torch.Tensor | None = field(default=None, init=False, repr=False)  # (S_kept,) gather index

    def __post_init__(self) -> None:
        start, end = self.visual_span
        if not 0 <= start <= end:
            raise ValueError(f"visual_span must be [start, end) with 0 <= start <= end, got {self.visual_span}")

    @property
    def steps(self) -> int:
        """Decode steps seen so far (prefill is not a decode step)."""
        return len(self.attended)

    def attend(self, module, query, key, value, attention_mask, **kwargs):
        """The attention call of one layer while this pruner is active."""
        if query.shape[0] != 1:
            raise SettingsError(f"DyCoke KV pruning supports batch size 1 only, got {query.shape[0]}.")
        layer, L = module.layer_idx, self.config.layer
        if query.shape[2] != 1:  # prefill or a multi-token chunk: plain SDPA, and a new generation begins
            if layer == L - 1:
                self._prev_scores = self._last_visual = self._keep = None
            return _sdpa(module, query, key, value, attention_mask, **kwargs)
        if layer == 0:
            self._check_depth(module)
        if layer == L - 1:
            self._begin_step(module, query, key, attention_mask, kwargs.get("scaling"))
        if layer < L or self._keep is None:
            return _sdpa(module, query, key, value, attention_mask, **kwargs)
        keep = self._keep.to(key.device)  # (S_kept,); a no-op unless layers sit on several devices
        key, value = key.index_select(2, keep), value.index_select(2, keep)  # (1, Hkv, S_kept, hd)
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask.index_select(-1, keep)  # (1, 1|H, 1, S_kept)
        return _sdpa(module, query, key, value, attention_mask, **kwargs)

    def _check_depth(self, module) -> None:
        n_layers = getattr(getattr(module, "config", None), "num_hidden_layers", None)
        if self.config.p > 0 and n_layers is not None and self.config.layer >= n_layers:
            raise SettingsError(
                f"DP layer L={self.config.layer} leaves no layer to prune in a {n_layers}-layer model; "
                f"use L between 1 and {n_layers - 1}."
            )

    def _begin_step(self, module, query, key, attention_mask, scaling) -> None:
        """At layer L-1 of a decode step: score, apply the gate, fix the gather index for layers >= L."""
        length = key.shape[2]
        start, end = self.visual_span
        if end > length:
            raise ValueError(f"visual_span {self.visual_span} lies outside the {length}-entry KV cache")
        if self.config.p == 0 or end == start:
            self._record(None, length, "full")
            return
        scores = _visual_attention(module, query, key, attention_mask, scaling)[start:end]  # (n_visual,)
        prev, self._prev_scores = self._prev_scores, scores
        similar = prev is not None and F.cosine_similarity(scores, prev, dim=0).item() >= self.config.threshold
        if not similar:
            n_keep = int((end - start) * (1 - self.config.p))
            top = scores.topk(n_keep).indices.sort().values + start  # (n_keep,) positional order
            self._last_visual = top
            self._record(top, length, "selected")
        elif self.config.gate == "reuse":
            self._record(self._last_visual, length, "reused")
        else:
            self._record(None, length, "full")

    def _record(self, visual: torch.Tensor | None, length: int, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.kept_visual.append(visual)
        if visual is None:
            self._keep = None
            self.attended.append(length)
            return
        start, end = self.visual_span
        device = visual.device
        self._keep = torch.cat(
            [torch.arange(start, device=device), visual, torch.arange(end, length, device=device)]
        )  # (S_kept,) every non-visual position plus the kept visual ones
        self.attended.append(self._keep.numel())


def _visual_attention(module, query, key, attention_mask, scaling) -> torch.Tensor:
    """softmax(q K^T * scale) of the single query over all keys, float32, averaged over query heads."""
    _, heads, _, head_dim = query.shape  # (1, H, 1, hd)
    kv_heads = key.shape[1]  # (1, Hkv, S, hd)
    groups = getattr(module, "num_key_value_groups", heads // kv_heads)
    scale = scaling if scaling is not None else head_dim**-0.5
    q = query[0, :, 0].float().view(kv_heads, groups, head_dim)  # (Hkv, G, hd): head h uses kv head h // G
    logits = torch.matmul(q, key[0].float().transpose(1, 2)) * scale  # (Hkv, G, S)
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask[0, :, -1]  # (1|H, S)
        mask = mask.view(kv_heads, groups, -1) if mask.shape[0] == heads else mask.view(1, 1, -1)
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
    return logits.softmax(dim=-1).mean(dim=(0, 1))  # (S,)


def _sdpa(module, query, key, value, attention_mask, **kwargs):
    """transformers' own SDPA attention, so that an inactive DP is exactly the stock behaviour."""
    global _SDPA
    if _SDPA is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        _SDPA = sdpa_attention_forward
    return _SDPA(module, query, key, value, attention_mask, **kwargs)


def _dp_attention(module, query, key, value, attention_mask, **kwargs):
    """Registered under ATTENTION_NAME: stock SDPA, unless a pruner is active."""
    pruner = _ACTIVE
    if pruner is None:
        return _sdpa(module, query, key, value, attention_mask, **kwargs)
    return pruner.attend(module, query, key, value, attention_mask, **kwargs)


def enable(model) -> None:
    """Route the text model's attention through DP. Idempotent; inert (exactly SDPA) with no active pruner.

    The mask function must be registered too: without it transformers builds no mask at all for an
    unknown attention name. A model with a text_config (LLaVA-OV) switches only its language model,
    so the vision tower keeps its own attention; a bare language model switches as a whole.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _dp_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    if "text_config" in getattr(model.config, "sub_configs", {}):
        model.set_attn_implementation({"text_config": ATTENTION_NAME})
    else:
        model.set_attn_implementation(ATTENTION_NAME)


@contextmanager
def pruning(config: DPConfig, visual_span: tuple[int, int]) -> Iterator[DecodePruner]:
    """Activate DP for the generate() call(s) inside the block; yields the pruner to read stats from.

    visual_span: [start, end) sequence positions of the post-TTM visual tokens; the trailing
    image_newline is not in it (it is a non-visual position and always kept). Gate state also
    restarts at every prefill, so each generate() inside the block begins with a fresh selection.
    """
    global _ACTIVE
    pruner = DecodePruner(config, tuple(visual_span))
    previous, _ACTIVE = _ACTIVE, pruner
    try:
        yield pruner
    finally:
        _ACTIVE = previous
