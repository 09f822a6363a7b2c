"""One attention function for the language model that dispatches to the active method's hook.

Every transformers 5.x decoder calls the registered attention function after updating the cache,
with the layer module (`layer_idx`, `num_key_value_groups`), the post-RoPE query and the FULL cached
K/V (see shared/TRANSFORMERS_NOTES.md). We register one function under ATTENTION_NAME, for the text
model only, and attach a `Dispatch` to every attention module of that model. With no hook active the
function is transformers' own SDPA, so an installed but idle dispatcher changes nothing.

The active hook lives on the model's modules, not in a global: two models in one process do not see
each other's hooks, and a generate() running in a worker thread sees the hook of its model.
A hook may also need the decoder layers' inputs (FastV shrinks the sequence after layer K): it gets
`layers` in `start` and registers what it needs there, and removes it in `stop`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ATTENTION_NAME = "dycoke"

_SDPA: Callable | None = None  # transformers' stock sdpa_attention_forward, imported on first use


def sdpa(module, query, key, value, attention_mask, **kwargs):
    """transformers' own SDPA attention, so that an idle hook is exactly the stock behaviour; or, for a
    decode step of a CPU model given a faster decode kernel at load (models/cpu_decode.py), that one."""
    decode = getattr(module, "dycoke_decode_attention", None)
    if decode is not None and query.shape[2] == 1:
        out = decode(module, query, key, value, attention_mask, **kwargs)
        if out is not None:
            return out
    global _SDPA
    if _SDPA is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        _SDPA = sdpa_attention_forward
    return _SDPA(module, query, key, value, attention_mask, **kwargs)


@dataclass(frozen=True)
class HookContext:
    """What a hook knows about one generate call.

    visual: (Nv,) int64 positions of the visual tokens in the prompt as prefilled (after any
            selection), ascending; the other positions (text, timestamps, newline) are never pruned.
    prompt_length: tokens in the prompt (the cache length after prefill for an unshrunk layer).
    layers: depth of the language model.
    """

    visual: "torch.Tensor"
    prompt_length: int
    layers: int


class AttentionHook:
    """Base hook: plain SDPA. `attended` lists, per decode step, how many KV entries the pruned layers
    attended to (the full cache length when nothing was pruned), for the stats."""

    def __init__(self, context: HookContext):
        self.context = context
        self.attended: list[int] = []

    def start(self, layers: list) -> None:
        """Called before generate with the decoder layers; register module hooks here."""

    def stop(self) -> None:
        """Called after generate, also on failure."""

    def attend(self, module, query, key, value, attention_mask, **kwargs):
        return sdpa(module, query, key, value, attention_mask, **kwargs)

    def counters(self) -> dict:
        return {}


@dataclass
class Dispatch:
    """Per model: the hook of the generate call in progress, None when idle."""

    hook: AttentionHook | None = None
    layers: list = field(default_factory=list)


def _attention(module, query, key, value, attention_mask, **kwargs):
    """Registered under ATTENTION_NAME."""
    dispatch = getattr(module, "dycoke_dispatch", None)
    if dispatch is None or dispatch.hook is None:
        return sdpa(module, query, key, value, attention_mask, **kwargs)
    return dispatch.hook.attend(module, query, key, value, attention_mask, **kwargs)


def install(model, layers: list) -> Dispatch:
    """Route the text model's attention through the dispatcher. Idempotent.

    layers: the language model's decoder layers, each with a `self_attn`. The mask function must be
    registered too: without it transformers builds no mask at all for an unknown attention name. A
    model with a text_config switches only its language model, so the vision tower keeps its own
    attention; a bare language model switches as a whole.
    """
    existing = getattr(layers[0].self_attn, "dycoke_dispatch", None)
    if existing is not None:
        return existing
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    if "text_config" in getattr(model.config, "sub_configs", {}):
        model.set_attn_implementation({"text_config": ATTENTION_NAME})
    else:
        model.set_attn_implementation(ATTENTION_NAME)
    dispatch = Dispatch(layers=list(layers))
    for layer in layers:
        layer.self_attn.dycoke_dispatch = dispatch
    return dispatch


@contextmanager
def active(model, layers: list, hook: AttentionHook | None) -> Iterator[AttentionHook | None]:
    """Make `hook` the model's hook for the generate call(s) inside the block (None: nothing to do)."""
    if hook is None:
        yield None
        return
    dispatch = install(model, layers)
    previous, dispatch.hook = dispatch.hook, hook
    hook.start(dispatch.layers)
    try:
        yield hook
    finally:
        hook.stop()
        dispatch.hook = previous


def last_query_attention(module, query, key, attention_mask, scaling) -> "torch.Tensor":
    """softmax(q K^T * scale) of the LAST query row over all keys, float32, averaged over query heads.

    query: (1, H, Q, hd), key: (1, Hkv, S, hd) with grouped KV heads expanded implicitly (head h uses
    kv head h // G). One row costs O(S * hd * H): no eager attention matrix is ever built.
    """
    import torch

    _, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = getattr(module, "num_key_value_groups", heads // kv_heads)
    scale = scaling if scaling is not None else head_dim**-0.5
    q = query[0, :, -1].float().view(kv_heads, groups, head_dim)  # (Hkv, G, hd)
    logits = torch.matmul(q, key[0].float().transpose(1, 2)) * scale  # (Hkv, G, S)
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask[0, :, -1]  # (1|H, S)
        mask = mask.view(kv_heads, groups, -1) if mask.shape[0] == heads else mask.view(1, 1, -1)
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
    return logits.softmax(dim=-1).mean(dim=(0, 1))  # (S,)


def gather_mask(attention_mask, keep: "torch.Tensor"):
    """The 4-D mask restricted to the key positions in `keep` (None and non-4-D masks pass through)."""
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask.index_select(-1, keep.to(attention_mask.device))
    return attention_mask
