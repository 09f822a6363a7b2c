"""Temporal token merging: exact counts, which tokens go, and in which order the rest come out."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dycoke_cli.compress.ttm import ttm_keep_indices, ttm_kept_count
from dycoke_cli.errors import SettingsError

T = 196  # LLaVA-OV: 14x14 pooled tokens per frame
N_KEEP = {0.3: 137, 0.5: 98, 0.7: 58}  # int((1 - K) * 196), the paper's 137 / 98 / 58

# (frames kept whole, frames pruned) per frame count, worked out by hand from DYCOKE.md.
# clean: each window of 4 is 1 whole + 3 pruned; a partial window of r frames is 1 whole + (r-1) pruned.
CLEAN = {1: (1, 0), 2: (1, 1), 3: (1, 2), 4: (1, 3), 5: (2, 3), 8: (2, 6), 31: (8, 23), 32: (8, 24)}
# reference: pairs (i, i+1) for even i < F-1 (odd last frame dropped) prune every odd frame against its
# even neighbour; then frame i+2 is pruned against i for i in range(0, F-4, 4) only.
# F=5: frames 0-3, 1 and 3 by pairs, 2 by range(0, 1, 4) = [0]        -> whole {0}
# F=8: 1, 3, 5, 7 by pairs, 2 by range(0, 4, 4) = [0]                  -> whole {0, 4, 6}
# F=31: frames 0-29, 15 odd, 2..26 by range(0, 27, 4) (7 frames)       -> whole {0, 4, ..., 28} (8)
# F=32: 16 odd, 2..26 by range(0, 28, 4) (7 frames)                   -> whole 9 (30 is the quirk)
REFERENCE = {5: (1, 3), 8: (3, 5), 31: (8, 22), 32: (9, 23)}


def _features(frames: int, tokens: int = T, dim: int = 4, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, tokens, dim, generator=g).to(dtype)  # (F, T, D)


@pytest.mark.parametrize("k", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 8, 31, 32])
def test_kept_counts_are_exact_and_arithmetic_agrees(frames, k):
    for variant, table in (("clean", CLEAN), ("reference", REFERENCE)):
        if variant == "reference" and frames <= 4:
            with pytest.raises(SettingsError):
                ttm_keep_indices(_features(frames), k, variant)
            with pytest.raises(SettingsError):
                ttm_kept_count(frames, T, k, variant)
            continue
        whole, pruned = table[frames]
        expected = whole * T + pruned * N_KEEP[k]
        idx = ttm_keep_indices(_features(frames), k, variant)
        assert idx.dtype == torch.int64 and idx.dim() == 1
        assert len(idx) == expected == ttm_kept_count(frames, T, k, variant)
        assert len(set(idx.tolist())) == len(idx) and 0 <= int(idx.min()) and int(idx.max()) < frames * T
        frame_of = idx // T
        assert torch.all(frame_of[1:] >= frame_of[:-1]), "frames must stay in temporal order"


def test_published_token_counts():
    x = _features(32)
    assert len(ttm_keep_indices(x, 0.7, "clean")) == ttm_kept_count(32, T, 0.7) == 2960
    assert len(ttm_keep_indices(x, 0.7, "reference")) == ttm_kept_count(32, T, 0.7, "reference") == 3098
    assert ttm_kept_count(32, T, 0.0) == 6272


@pytest.mark.parametrize("variant", ["clean", "reference"])
@pytest.mark.parametrize("frames", [1, 3, 8])
def test_k_zero_keeps_everything_in_order(frames, variant):
    # K = 0 means TTM is off, so even the reference variant's F <= 4 restriction does not apply.
    idx = ttm_keep_indices(_features(frames), 0.0, variant)
    assert torch.equal(idx, torch.arange(frames * T))
    assert ttm_kept_count(frames, T, 0.0, variant) == frames * T


def test_reference_rejects_four_frames_or_fewer_with_one_line():
    for frames in (1, 2, 3, 4):
        with pytest.raises(SettingsError) as info:
            ttm_keep_indices(_features(frames), 0.7, "reference")
        assert "\n" not in str(info.value) and str(frames) in str(info.value)
        assert info.value.exit_code == 2


def test_bad_settings_raise():
    x = _features(8)
    for k in (-0.1, 1.5):
        with pytest.raises(SettingsError):
            ttm_keep_indices(x, k)
    with pytest.raises(SettingsError):
        ttm_keep_indices(x, 0.5, "paper")
    with pytest.raises(ValueError):
        ttm_keep_indices(x.flatten(0, 1), 0.5)


@pytest.mark.parametrize("variant,whole_frames", [("clean", [0, 4, 8]), ("reference", [0, 4, 6])])
def test_anchors_are_kept_whole_and_in_raster_order(variant, whole_frames):
    frames = 10 if variant == "clean" else 8  # reference F=8: frame 6 is the last-window quirk
    idx = ttm_keep_indices(_features(frames), 0.7, variant).tolist()
    for f in whole_frames:
        block = list(range(f * T, (f + 1) * T))
        at = idx.index(f * T)
        assert idx[at : at + T] == block, f"frame {f} must be kept whole, in raster order"
    assert sum(1 for i in idx if i // T not in whole_frames) == (frames - len(whole_frames)) * N_KEEP[0.7]


def _angles_window(tokens: int, seed: int):
    """Four frames of unit 2-D tokens whose per-slot similarities are known exactly.

    frame 0: all (1, 0); frame 1 at angle a1; frame 2 at angle a2; frame 3 at a2 + a3. So the
    similarity of 1 vs 0 is cos a1, of 2 vs 0 is cos a2, of 3 vs the unpruned 2 is cos a3, and of
    3 vs 0 would be cos(a2 + a3): a different ranking, which catches a wrong reference frame.
    """
    g = torch.Generator().manual_seed(seed)
    step = (math.pi / 4) / tokens
    a1, a2, a3 = ((torch.randperm(tokens, generator=g).double() + 0.5) * step for _ in range(3))
    unit = lambda a: torch.stack([a.cos(), a.sin()], dim=-1)  # noqa: E731  (T, 2)
    x = torch.stack([unit(torch.zeros(tokens)), unit(a1), unit(a2), unit(a2 + a3)]).float()  # (4, T, 2)
    return x, a1, a2, a3


def _least_similar(angle: torch.Tensor, n: int) -> list[int]:
    """Slots in ascending similarity (descending angle), the n kept ones."""
    return torch.argsort(angle, descending=True)[:n].tolist()


def test_dropped_tokens_are_exactly_the_most_similar_clean():
    tokens, k = 16, 0.5
    n = int((1 - k) * tokens)
    w1, a1, a2, a3 = _angles_window(tokens, seed=1)
    w2, b1, b2, b3 = _angles_window(tokens, seed=2)
    x = torch.cat([w1, w2])  # (8, T, 2): two windows
    assert set(_least_similar(a3, n)) != set(_least_similar(a2 + a3, n)), "premise: reference frame matters"
    idx = ttm_keep_indices(x, k, "clean").view(-1).tolist()
    expected = []
    for base, (c1, c2, c3) in ((0, (a1, a2, a3)), (4, (b1, b2, b3))):
        expected += [base * tokens + j for j in range(tokens)]
        for f, angle in ((base + 1, c1), (base + 2, c2), (base + 3, c3)):
            expected += [f * tokens + j for j in sorted(_least_similar(angle, n))]  # raster order
    assert idx == expected


@pytest.mark.parametrize("frames", [8, 9])
def test_reference_keeps_released_order_and_quirks(frames):
    tokens, k = 16, 0.5
    n = int((1 - k) * tokens)
    w1, a1, a2, a3 = _angles_window(tokens, seed=3)
    w2, b1, b2, b3 = _angles_window(tokens, seed=4)
    x = torch.cat([w1, w2, w1[:1]])[:frames]  # (F, T, 2)
    idx = ttm_keep_indices(x, k, "reference").tolist()
    expected = [j for j in range(tokens)]
    for f, angle in ((1, a1), (2, a2), (3, a3)):  # ascending similarity within each pruned frame
        expected += [f * tokens + j for j in _least_similar(angle, n)]
    expected += [4 * tokens + j for j in range(tokens)]
    expected += [5 * tokens + j for j in _least_similar(b1, n)]
    if frames == 8:  # released loop bound F-4: the last full window's a+2 stays whole
        expected += [6 * tokens + j for j in range(tokens)]
    else:  # with 9 frames range(0, 5, 4) reaches a = 4, so frame 6 is pruned against frame 4
        expected += [6 * tokens + j for j in _least_similar(b2, n)]
    # frame 7 is pruned against frame 6 unpruned: angle b3; a 9th (odd last) frame is dropped
    expected += [7 * tokens + j for j in _least_similar(b3, n)]
    assert idx == expected


def test_similarity_is_float32_for_bf16_input():
    # Slot j of frame 1 is (1, t_j) with t_j = m/256: exact in bf16, cosines all within 0.008 of 1,
    # which bf16 (8 significant bits) cannot rank. The right answer keeps the largest t_j.
    tokens, k = 32, 0.5
    g = torch.Generator().manual_seed(5)
    t = (torch.randperm(tokens, generator=g) + 1).double() / 256
    anchor = torch.stack([torch.ones(tokens), torch.zeros(tokens)], dim=-1)  # (T, 2)
    moved = torch.stack([torch.ones(tokens), t.float()], dim=-1)  # (T, 2)
    x = torch.stack([anchor, moved]).to(torch.bfloat16)  # (2, T, 2)
    assert torch.equal(x.float()[1, :, 1].double(), t), "premise: inputs exact in bf16"
    in_bf16 = F.cosine_similarity(x[1], x[0], dim=-1)
    assert len(set(in_bf16.tolist())) < tokens // 2, "premise: bf16 arithmetic collapses the ranking"
    idx = ttm_keep_indices(x, k, "clean")
    n = int((1 - k) * tokens)
    assert idx[tokens:].tolist() == [tokens + j for j in sorted(torch.argsort(t, descending=True)[:n].tolist())]
