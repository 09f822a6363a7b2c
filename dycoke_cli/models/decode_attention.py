"""Attention of one new token over the KV cache as two grouped matrix products, for the CPU.

Why. torch's CPU SDPA runs a decode step (one query row) through its flash-attention kernel, built
for blocks of many queries: in bf16 it took 2.4 ms a layer over 1,600 cached tokens and 9 ms over
6,000 on one Zen 4 core, 56 and 214 ms a step for a 24-layer model, more than reading all 0.5B
weights (~30 ms). The same attention as grouped products (each KV head's G query heads in one row
block) takes 0.2 and 0.7 ms. Computed in fp32 from the cached bf16 values, it is as close to an fp64
reference as SDPA (measured: 4.6e-4 both at 1,600 tokens), and its result does not depend on the
thread count. The choice between the two is made per dtype by models/cpu_decode.py's probe.

`attend` takes transformers' attention-function arguments and returns None where it does not apply
(more than one query row, dropout, soft-capping, an attention sink, a mask it cannot read), so the
caller falls back to SDPA. `forward` is that pair, registered with transformers as the attention
implementation IMPLEMENTATION: a CPU model whose probe chose the grouped kernel runs it as its own
attention, and a method's hook falls back to it like to any implementation (compress/attention.py).
A module takes the grouped kernel only while it carries `dycoke_decode_attention` (cpu_decode.py
removes it for side-by-side measurements of the stock path); otherwise `forward` is SDPA.
"""

from __future__ import annotations

import torch


def attend(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
           scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """(attn_output (B, 1, H, hd), None) as transformers' sdpa_attention_forward returns it, or None.

    query: (B, H, 1, hd); key, value: (B, Hkv, S, hd), H = G * Hkv; attention_mask: None, or 4-D
    (B, 1|H, 1, S), boolean (True = attend) or additive.
    """
    if query.shape[2] != 1 or dropout or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None \
            or kwargs.get("position_bias") is not None or key.shape[-1] != value.shape[-1]:
        return None
    batch, heads, _, head_dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    if heads % kv_heads or (attention_mask is not None and (
            attention_mask.dim() != 4 or attention_mask.shape[1] not in (1, heads) or attention_mask.shape[2] != 1
            or attention_mask.shape[3] != length)):
        return None
    groups = heads // kv_heads
    scale = scaling if scaling is not None else head_dim**-0.5
    q = query.reshape(batch, kv_heads, groups, head_dim).float()  # (B, Hkv, G, hd)
    scores = torch.matmul(q, key.float().transpose(2, 3)) * scale  # (B, Hkv, G, S)
    if attention_mask is not None:
        mask = attention_mask  # (B, 1, 1, S) broadcasts; (B, H, 1, S) -> (B, Hkv, G, S)
        mask = mask.reshape(mask.shape[0], kv_heads, groups, length) if mask.shape[1] == heads else mask
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = torch.matmul(scores.softmax(dim=-1), value.float())  # (B, Hkv, G, hd)
    return out.to(query.dtype).reshape(batch, 1, heads, head_dim), None


IMPLEMENTATION = "cpu-decode"


def forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, **kwargs):
    """The attention function registered as IMPLEMENTATION: a decode step through `attend` where the
    module carries it and it applies, everything else (prefill, the vision tower's own) through SDPA."""
    from transformers import AttentionInterface

    decode = getattr(module, "dycoke_decode_attention", None)
    if decode is not None:
        out = decode(module, query, key, value, attention_mask, **kwargs)
        if out is not None:
            return out
    return AttentionInterface()["sdpa"](module, query, key, value, attention_mask, **kwargs)


def register() -> str:
    """Register IMPLEMENTATION with transformers (and SDPA's mask function under it); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, forward)
    AttentionMaskInterface.register(IMPLEMENTATION, AttentionMaskInterface()["sdpa"])
    return IMPLEMENTATION
