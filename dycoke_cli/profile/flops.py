"""The language model's theoretical prefill FLOPs: the figure DyCoke and FastV report, and a dense count.

Read from the model's own configuration, so a report says what a setting saves in arithmetic, beside
what it saved in time. A method that shrinks the sequence inside the model (FastV) reports the layer
it shrinks at and the tokens left, and the count follows it layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOPS_FORMULA = "L * (4*n*d^2 + 2*n^2*d + 2*n*d*m)"
FLOPS_DENSE_FORMULA = "L * 2 * (2*n*d^2 + 2*n*d*d_kv + 2*n^2*d + 3*n*d*m)"
VISION_FLOPS_FORMULA = "sum over frames and tower layers of 2 * (4*n*d^2 + 2*n^2*d + 2*n*d*m)"


@dataclass(frozen=True)
class TowerDims:
    """The vision tower's dimensions the FLOP model needs (from the family adapter)."""

    hidden: int  # d
    mlp: int  # m
    layers: int  # L

    @classmethod
    def from_adapter(cls, adapter) -> "TowerDims | None":
        try:
            hidden, mlp = adapter.tower_dims()
            return cls(hidden=hidden, mlp=mlp, layers=adapter.tower_depth())
        except NotImplementedError:
            return None


def vision_flops(stats: dict, dims: TowerDims) -> int:
    """The vision tower's arithmetic for one encoding (a Stats.to_dict()), 2 FLOPs a multiply-add: each
    layer on each frame's n patches costs 4nd^2 (Q, K, V, O) + 2n^2d (QK^T and AV over the whole frame;
    Qwen2.5-VL's window layers cost less: an upper bound there) + 2ndm (the MLP's two matrices). Layers
    before a selection inside the tower run `tower_patches` per frame, the later ones each frame's kept
    patches. Patch embedding, projector and merger are left out (a few percent)."""
    d, m = dims.hidden, dims.mlp

    def layer(n: int) -> int:
        return 2 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)

    frames = -(-stats["frames"] // stats["frames_per_group"])  # model frames (Qwen: temporal groups)
    full = stats["tower_patches"]
    cut = dims.layers if stats["encoder_layer"] is None else stats["encoder_layer"]
    kept = stats["tower_patches_kept"] or [full] * frames
    return cut * frames * layer(full) + (dims.layers - cut) * sum(layer(n) for n in kept)


@dataclass(frozen=True)
class LMDims:
    """The language model's dimensions the FLOP model needs, read from its own config."""

    hidden: int  # d
    ffn: int  # m
    layers: int  # L
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, text_config) -> LMDims:
        heads = text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(hidden=text_config.hidden_size, ffn=text_config.intermediate_size,
                   layers=text_config.num_hidden_layers, heads=heads,
                   kv_heads=getattr(text_config, "num_key_value_heads", None) or heads, head_dim=head_dim)


def prefill_flops(n: int, dims: LMDims) -> int:
    """Prefill cost of n tokens in the convention of DyCoke and FastV: L * (4nd^2 + 2n^2d + 2ndm).

    This is the figure the paper's ~41 TFLOPs (LLaVA-OV-7B, 32 frames, full) and ~18 (K = 0.7) come
    from; with n = 32*196 + 1 + 100 it gives 41.55e12, and 17.92e12 for n = 2960 + 1 + 100. It counts
    multiply-accumulates of Q, K, V, O as four d x d projections (GQA's narrower K/V ignored), QK^T
    and AV over the full n x n (no causal halving), and a two-matrix FFN: one 2ndm term, *not* three
    SwiGLU matrices (reading it as 3 x 2ndm would give ~90 TFLOPs, far from the published 41). The
    lm_head is left out (prefill computes logits for the last position only). Use it for ratios
    between settings and for comparison with published figures; `prefill_flops_dense` is the count
    of the arithmetic Qwen2 actually does.
    """
    d, m = dims.hidden, dims.ffn
    return dims.layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)


def prefill_flops_dense(n: int, dims: LMDims) -> int:
    """Floating-point operations of Qwen2's prefill matmuls (2 per multiply-add): L * 2 * (2nd^2 for
    Q and O + 2n*d*d_kv for the grouped K and V + 2n^2d for QK^T and AV + 3ndm for SwiGLU's gate, up
    and down). 99.5e12 for the 7B full-video case above; about 2.4x the paper convention."""
    d, m, d_kv = dims.hidden, dims.ffn, dims.kv_heads * dims.head_dim
    return dims.layers * 2 * (2 * n * d * d + 2 * n * d * d_kv + 2 * n * n * d + 3 * n * d * m)


def prefill_flops_for(stats: dict, dims: LMDims, dense: bool = False) -> int:
    """Prefill FLOPs of one answer (a Stats.to_dict()): all layers on `prefill_tokens`, or, where the
    method shrank the sequence at layer K, K layers on the full prompt and the rest on what was left."""
    count = prefill_flops_dense if dense else prefill_flops
    n = stats["prefill_tokens"]
    counters = stats["compression"]["counters"]
    layer, left = counters.get("prefill_layer"), counters.get("prefill_tokens_after")
    if layer is None or left is None:
        return count(n, dims)
    per_layer = lambda tokens: count(tokens, dims) // dims.layers  # noqa: E731 - every layer costs the same
    return layer * per_layer(n) + (dims.layers - layer) * per_layer(left)
