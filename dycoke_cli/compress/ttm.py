"""Temporal token merging (TTM), DyCoke's prefill stage: drop the visual tokens that did not change.

Neighbouring video frames repeat most of their content. TTM walks the frames in windows of four and,
slot by slot (the same spatial position j in two frames), drops the tokens of a frame that are most
similar to a reference frame: the redundant copy carries nothing the reference does not. What is
left goes to the language model, so prefill (quadratic in sequence length) gets much cheaper.

Window [a, a+1, a+2, a+3]: a is the anchor, kept whole; a+1 and a+2 are pruned against a; a+3 is
pruned against the *unpruned* a+2. A pruned frame keeps the int((1 - K) * T) slots with the LOWEST
similarity. Nothing is averaged: DyCoke's "merging" is dropping.

Two variants (see shared/DYCOKE.md):
- ``clean`` (default): every window is pruned, a partial last window as far as it goes, kept tokens
  stay in raster order, any F >= 1.
- ``reference``: the released code's behaviour, for comparison with published numbers. The last
  full window's a+2 stays whole (its loop bound is F-4), an odd last frame is dropped, kept tokens
  come out in ascending-similarity order, and F <= 4 is an error.

This module returns indices, not features: the engine must drop the same positions from the
placeholder ids as from the features, and one index tensor serves both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dycoke_cli.errors import SettingsError

VARIANTS = ("clean", "reference")
WINDOW = 4

# One entry per frame that survives, in temporal order: (frame, reference frame or None if whole).
Plan = list[tuple[int, int | None]]


def _check(frames: int, tokens_per_frame: int, k: float, variant: str) -> None:
    if variant not in VARIANTS:
        raise SettingsError(f"Unknown TTM variant {variant!r}; choose one of: {', '.join(VARIANTS)}.")
    if not 0.0 <= k <= 1.0:
        raise SettingsError(f"TTM pruning rate K must be between 0 and 1, got {k}.")
    if frames < 1 or tokens_per_frame < 1:
        raise SettingsError(f"TTM needs at least one frame and one token per frame, got {frames}x{tokens_per_frame}.")
    if variant == "reference" and k > 0 and frames <= WINDOW:
        raise SettingsError(
            f"The reference TTM variant needs more than {WINDOW} frames (got {frames}); use the clean variant."
        )


def _plan(frames: int, variant: str) -> Plan:
    """Which frames survive and what each is pruned against; the single source of every count."""
    plan: Plan = []
    if variant == "clean":
        for f in range(frames):
            a, r = f - f % WINDOW, f % WINDOW
            plan.append((f, None if r == 0 else a if r in (1, 2) else a + 2))
        return plan
    # reference: pairs (i, i+1) for even i < F-1, so an odd last frame never appears; then frame i+2
    # is re-pruned against i only for i in range(0, F-4, 4), which skips the last full window.
    for f in range(frames - frames % 2):
        if f % 2 == 1:
            ref = f - 1
        elif f % WINDOW == 2 and f - 2 < frames - WINDOW:
            ref = f - 2
        else:
            ref = None
        plan.append((f, ref))
    return plan


def slots_kept(tokens_per_frame: int, k: float) -> int:
    """Slots a pruned frame keeps at rate K: the paper's code's int((1 - K) * T); 58 of 196 at K = 0.7."""
    return int((1 - k) * tokens_per_frame)


def frame_roles(frames: int, variant: str = "clean") -> tuple[int, int]:
    """(frames kept whole, frames pruned) when TTM is on: what a token budget is solved against."""
    plan = _plan(frames, variant)
    pruned = sum(1 for _, ref in plan if ref is not None)
    return len(plan) - pruned, pruned


def ttm_kept_count(frames: int, tokens_per_frame: int, k: float, variant: str = "clean",
                   n_keep: int | None = None) -> int:
    """Number of tokens ttm_keep_indices keeps, by arithmetic (for reports and FLOP estimates).

    The image_newline the engine appends afterwards is not counted.
    """
    _check(frames, tokens_per_frame, k, variant)
    if k == 0 and n_keep is None:
        return frames * tokens_per_frame
    whole, pruned = frame_roles(frames, variant)
    return whole * tokens_per_frame + pruned * (slots_kept(tokens_per_frame, k) if n_keep is None else n_keep)


def ttm_keep_indices(features: torch.Tensor, k: float, variant: str = "clean",
                     n_keep: int | None = None) -> torch.LongTensor:
    """Flat indices (into the F*T rows of ``features``) of the tokens to keep, in LM order.

    features: (F, T, D) pooled per-frame tokens, image_newline excluded. Returns (N_kept,) int64 on
    the features' device. Frames stay in temporal order; within a pruned frame, raster order
    (clean) or ascending similarity (reference). K == 0 keeps everything in order, any variant.
    Similarities are computed in float32 whatever the input dtype: near 1.0, bf16 cannot tell
    0.998 from 0.999, and the ranking is the whole point. `n_keep`, when given, replaces
    int((1 - K) * T) as the slots a pruned frame keeps (a token budget solves for it exactly).
    """
    if features.dim() != 3:
        raise ValueError(f"features must be (F, T, D), got shape {tuple(features.shape)}")
    frames, tokens, _ = features.shape
    _check(frames, tokens, k, variant)
    device = features.device
    if k == 0 and n_keep is None:
        return torch.arange(frames * tokens, device=device)

    plan = _plan(frames, variant)
    n_keep = slots_kept(tokens, k) if n_keep is None else n_keep
    pruned = [(f, ref) for f, ref in plan if ref is not None]
    kept_slots: dict[int, torch.Tensor] = {}
    if pruned:
        x = features.float()  # (F, T, D)
        targets = torch.tensor([f for f, _ in pruned], device=device)
        refs = torch.tensor([r for _, r in pruned], device=device)
        sim = F.cosine_similarity(x[targets], x[refs], dim=-1)  # (P, T)
        # Lowest similarity first: topk's sorted output is the released ascending order.
        slots = sim.topk(n_keep, dim=-1, largest=False, sorted=True).indices  # (P, n_keep)
        if variant == "clean":
            slots = slots.sort(dim=-1).values
        kept_slots = {f: slots[i] for i, (f, _) in enumerate(pruned)}

    whole = torch.arange(tokens, device=device)  # (T,)
    parts = [f * tokens + (whole if ref is None else kept_slots[f]) for f, ref in plan]
    return torch.cat(parts).long()
