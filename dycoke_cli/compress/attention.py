"""One attention function for the language model that dispatches to the active method's hook.

Every transformers 5.x decoder calls the registered attention function after updating the cache,
with the layer module (`layer_idx`, `num_key_value_groups`), the post-RoPE query and the FULL cached
K/V (see shared/TRANSFORMERS_NOTES.md). For the generate calls a method hooks, `active` registers one
function under `dycoke-<implementation>` (and the matching mask function), switches the TEXT model to
it and attaches a `Dispatch` to every attention module; afterwards it switches the model back. So a
model runs its own attention (SDPA, eager, flash: whatever it was loaded with) whenever no hook acts,
and a hook's own plain attention (`plain`) is that same implementation, never a hard-wired one.

The active hook lives on the model's modules, not in a global: two models in one process do not see
each other's hooks, and a generate() running in a worker thread sees the hook of its model.
A hook may also need the decoder layers' inputs (FastV shrinks the sequence after layer K): it gets
the layers in `start` and registers what it needs there, and removes it in `stop`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PREFIX = "dycoke-"  # registered as dycoke-sdpa, dycoke-eager, ...: the hooked form of each implementation


def implementation_function(module, implementation: str) -> Callable:
    """transformers' attention function for `implementation`, as the model's own modules call it:
    `eager` is each modeling module's `eager_attention_forward`, the others live in AttentionInterface."""
    if implementation == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers import AttentionInterface

    return AttentionInterface()[implementation]


def plain(module, query, key, value, attention_mask, **kwargs):
    """The attention the model was loaded with, for a hook's unhooked layers and steps."""
    return module.dycoke_dispatch.fallback(module, query, key, value, attention_mask, **kwargs)


@dataclass(frozen=True)
class HookContext:
    """What a hook knows about one generate call.

    visual: (Nv,) int64 positions of the visual tokens in the prompt as prefilled (after any
            selection), ascending; the other positions (text, timestamps, newline) are never pruned.
    prompt_length: tokens in the prompt (the cache length after prefill for an unshrunk layer).
    """

    visual: "torch.Tensor"
    prompt_length: int


class AttentionHook:
    """Base hook: plain attention. `attended` lists, per decode step, how many KV entries the pruned
    layers attended to (the full cache length when nothing was pruned), for the stats."""

    def __init__(self, context: HookContext):
        self.context = context
        self.attended: list[int] = []

    def start(self, layers: list) -> None:
        """Called before generate with the decoder layers; register module hooks here."""

    def stop(self) -> None:
        """Called after generate, also on failure."""

    def attend(self, module, query, key, value, attention_mask, **kwargs):
        return plain(module, query, key, value, attention_mask, **kwargs)

    def counters(self) -> dict:
        return {}

    def visual_kept(self) -> tuple[int, int] | None:
        """(layer, tokens) when the hook drops visual tokens inside the language model: from that layer
        on, only that many visual tokens are seen (the stats report them there); None otherwise."""
        return None

    def visual_share(self) -> "torch.Tensor | None":
        """(Nv,) float32: the share of decode steps at which the pruned layers attended each visual token
        (in `context.visual` order), for pictures of what a method looked at; None where the hook does
        not choose among the visual tokens at decode (or no decode step ran)."""
        return None


@dataclass
class Dispatch:
    """Per attention module while a hook is active: the hook, and the implementation to fall back to."""

    hook: AttentionHook
    fallback: Callable


def _attention(module, query, key, value, attention_mask, **kwargs):
    """Registered under PREFIX + implementation."""
    return module.dycoke_dispatch.hook.attend(module, query, key, value, attention_mask, **kwargs)


def switch_implementation(model, implementation: str) -> None:
    """Set the text model's attention implementation (a model without a text_config switches whole)."""
    if "text_config" in getattr(model.config, "sub_configs", {}):
        model.set_attn_implementation({"text_config": implementation})
    else:
        model.set_attn_implementation(implementation)


def _register(implementation: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    name = PREFIX + implementation
    AttentionInterface.register(name, _attention)
    AttentionMaskInterface.register(name, AttentionMaskInterface()[implementation])
    return name


@contextmanager
def active(model, layers: list, hook: AttentionHook | None, implementation: str) -> Iterator[AttentionHook | None]:
    """Make `hook` the model's hook for the generate call(s) inside the block (None: nothing to do).

    layers: the language model's decoder layers, each with a `self_attn`. implementation: what the
    model was loaded with; the model is switched back to it when the block ends, failures included.
    """
    if hook is None:
        yield None
        return
    switch_implementation(model, _register(implementation))
    for layer in layers:
        layer.self_attn.dycoke_dispatch = Dispatch(hook, implementation_function(layer.self_attn, implementation))
    hook.start(layers)
    try:
        yield hook
    finally:
        hook.stop()
        for layer in layers:
            del layer.self_attn.dycoke_dispatch
        switch_implementation(model, implementation)


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
