"""Dynamic KV-cache pruning (DP), DyCoke's decode stage: later layers attend to the visual tokens that matter now.

While the answer is generated, each new token attends over the whole cache, and with video most of
the cache is visual tokens. DyCoke scores them by the new token's own attention at layer L-1 and
lets layers L..N-1 attend only to the top (1 - P) share of visual positions plus every non-visual
one. The cache itself is never modified: each step gathers its subset, so a token dropped at one
step can be picked again at the next. DP saves attention work, not memory.

It runs as an attention hook (compress/attention.py): the model's own attention at prefill and in layers < L;
keys are cached after RoPE, so a gathered subset needs no position fix-up. The visual positions
come from the prompt's layout, not from a single span: frames may be separated by text (Qwen3-VL's
timestamps), which is never pruned.

Gate: the released code compares this step's visual-attention vector with the previous step's
(cosine). Below the threshold it selects anew; at or above it either reuses the previous indices
(`reuse`, our default) or runs the step on the full cache (`released`). The previous vector is
updated every step, whatever was decided, as in the released code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dycoke_cli.compress.attention import AttentionHook, HookContext, gather_mask, last_query_attention, plain
from dycoke_cli.errors import SettingsError

GATES = ("reuse", "released")


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


class DecodePruner(AttentionHook):
    """State of DP for one question: what each decode step kept, and why.

    attended[i]: KV entries that layers >= L attended to at decode step i (the full length when the
    step ran unpruned). kept_visual[i]: absolute positions of the visual entries kept at step i, or
    None for a full step (a reused step shares its tensor with the step that selected it).
    selected / reused / full: how many steps selected anew, reused the previous indices, ran full.
    """

    def __init__(self, config: DPConfig, context: HookContext):
        super().__init__(context)
        self.config = config
        self.visual = context.visual.long()  # (Nv,) ascending prompt positions
        self.kept_visual: list[torch.Tensor | None] = []
        self.selected = self.reused = self.full = 0
        self._prev_scores: torch.Tensor | None = None  # (Nv,) float32
        self._last_visual: torch.Tensor | None = None  # (n_keep,) positions
        self._keep: torch.Tensor | None = None  # (S_kept,) gather index of this step
        self._text = torch.ones(context.prompt_length, dtype=torch.bool)  # (P,) True at non-visual prompt positions
        self._text[self.visual] = False

    @property
    def steps(self) -> int:
        """Decode steps seen so far (prefill is not a decode step)."""
        return len(self.attended)

    def counters(self) -> dict:
        return {"dp_steps_selected": self.selected, "dp_steps_reused": self.reused, "dp_steps_full": self.full}

    def visual_share(self) -> torch.Tensor | None:
        """A full step attends every visual token; a pruned one those it kept."""
        if not self.kept_visual:
            return None
        counts = torch.zeros(self.visual.numel(), dtype=torch.float32)  # (Nv,)
        for kept in self.kept_visual:
            counts += 1 if kept is None else torch.isin(self.visual, kept.cpu()).float()
        return counts / len(self.kept_visual)

    def attend(self, module, query, key, value, attention_mask, **kwargs):
        if query.shape[0] != 1:
            raise SettingsError(f"DyCoke KV pruning supports batch size 1 only, got {query.shape[0]}.")
        layer, L = module.layer_idx, self.config.layer
        if query.shape[2] != 1:  # prefill or a multi-token chunk: plain attention, and a new generation begins
            if layer == L - 1:
                self._prev_scores = self._last_visual = self._keep = None
            return plain(module, query, key, value, attention_mask, **kwargs)
        if layer == 0:
            self._check_depth(module)
        if layer == L - 1:
            self._begin_step(module, query, key, attention_mask, kwargs.get("scaling"))
        if layer < L or self._keep is None:
            return plain(module, query, key, value, attention_mask, **kwargs)
        keep = self._keep.to(key.device)  # (S_kept,); a no-op unless layers sit on several devices
        key, value = key.index_select(2, keep), value.index_select(2, keep)  # (1, Hkv, S_kept, hd)
        return plain(module, query, key, value, gather_mask(attention_mask, keep), **kwargs)

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
        if self.visual.numel() and int(self.visual[-1]) >= length:
            raise ValueError(f"visual position {int(self.visual[-1])} lies outside the {length}-entry KV cache")
        if self.config.p == 0 or self.visual.numel() == 0:
            self._record(None, length, "full")
            return
        visual = self.visual.to(key.device)
        scores = last_query_attention(module, query, key, attention_mask, scaling)[visual]  # (Nv,)
        prev, self._prev_scores = self._prev_scores, scores
        similar = prev is not None and F.cosine_similarity(scores, prev, dim=0).item() >= self.config.threshold
        if not similar:
            n_keep = int(visual.numel() * (1 - self.config.p))
            top = visual[scores.topk(n_keep).indices.sort().values]  # (n_keep,) positional order
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
        prompt = self._text.to(visual.device).clone()  # (P,)
        prompt[visual] = True
        generated = torch.arange(prompt.numel(), length, device=visual.device)
        self._keep = torch.cat([prompt.nonzero().squeeze(1), generated])  # (S_kept,) non-visual + kept visual
        self.attended.append(self._keep.numel())
