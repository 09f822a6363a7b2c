"""`fastv`: FastV (Chen et al., ECCV 2024, "An Image is Worth 1/2 Tokens After Layer 2").

Past the first layers, the attention a prompt pays to most visual tokens is tiny; FastV stops
computing those tokens there. Rule, with layer = K and rate = R:

  layers 0..K-1 run on the whole prompt; at layer K-1 the attention of the LAST prompt token over
  all keys (softmax in float32, averaged over query heads, grouped KV heads expanded) ranks the
  visual tokens; the int(N_visual * (1 - R)) highest are kept (ties: the earlier position), every
  text token is kept; layers K..L-1 then run on that shorter sequence. Only one query row is ever
  computed by hand: no eager attention matrix, the model's own attention everywhere else.

The sequence really shrinks (the released code's `inplace` mode, not its mask mode): from layer K on
the hidden states, position embeddings and mask are gathered to the kept positions, so those layers
cost what a shorter prompt costs, and their KV cache holds only the kept entries. Kept tokens keep
their ORIGINAL positions (their rotary embeddings are gathered, not recomputed). Decoding then
attends to that reduced cache in layers >= K and to the full one below K (the released KV-cache
variant: selection once, at prefill, by the last prompt token).

Because the choice depends on the question, a FastV prompt is never reused for a follow-up question
(the whole prompt is prefilled again; the encoded video is kept). On Qwen3-VL, whose deepstack
features are added to the visual positions after layers 0-2, K must be at least 3.

Budget: `--budget B` keeps min(B, N_visual) visual tokens after layer K (token granularity); the
reported rate is the shortest one with int(N_visual * (1 - rate)) = that count.
"""

from __future__ import annotations

from dycoke_cli.compress.attention import AttentionHook, HookContext, gather_mask, last_query_attention, plain
from dycoke_cli.compress.base import Method, Param, VisualLayout, kept_rate
from dycoke_cli.errors import SettingsError


class FastV(Method):
    name = "fastv"
    summary = "FastV: after layer K, drop the visual tokens the last prompt token attends to least"
    params = (
        Param("layer", int, 2, "K: layers from K on run without the dropped tokens (layer K-1 ranks them)", low=1),
        Param("rate", float, 0.5, "fraction of visual tokens dropped after layer K", low=0.0, high=1.0,
              high_open=True),
    )
    budget_solves = "rate"
    question_dependent = True

    def check_model(self, layers: int, min_prune_layer: int = 0) -> None:
        layer = self.values["layer"]
        if layer >= layers:
            raise SettingsError(f"fastv: layer={layer} leaves no layer to prune in this {layers}-layer model; "
                                f"use {max(1, min_prune_layer)} to {layers - 1}")
        if layer < min_prune_layer:
            raise SettingsError(f"fastv: layer={layer} is below {min_prune_layer}: this model adds features to the "
                                f"visual positions in its first {min_prune_layer} layers; use layer >= {min_prune_layer}")

    def solved(self, layout: VisualLayout) -> float:
        visual = layout.total
        return kept_rate(self.kept_visual(visual), visual, lambda r: int(visual * (1 - r)))

    def kept_visual(self, visual: int) -> int:
        """How many of the prompt's `visual` tokens survive layer K."""
        if self.budget is None:
            return int(visual * (1 - self.values["rate"]))
        return self.budget_tokens(visual)

    def expected_tokens(self, layout: VisualLayout) -> int:
        return layout.total  # the prompt keeps every token; layers >= K see fewer

    def attention(self, context: HookContext):
        return Shrink(context, self.values["layer"], self.kept_visual(context.visual.numel()))


class Shrink(AttentionHook):
    """FastV inside one generate call: rank at layer K-1, shrink the sequence for layers K.."""

    def __init__(self, context: HookContext, layer: int, keep_visual: int):
        super().__init__(context)
        self.layer = layer
        self.keep_visual = keep_visual
        self.keep = None  # (S',) prompt positions that layers >= K see, ascending
        self._handles: list = []
        self._gathered: dict = {}  # id of a full-length layer input -> its gathered version

    def start(self, layers: list) -> None:
        for layer in layers[self.layer:]:
            self._handles.append(layer.register_forward_pre_hook(self._shrink, with_kwargs=True))

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._gathered.clear()

    def counters(self) -> dict:
        kept = 0 if self.keep is None else self.keep.numel()
        return {"prefill_layer": self.layer, "prefill_tokens_after": kept, "fastv_visual_kept": self.keep_visual}

    def visual_kept(self) -> tuple[int, int] | None:
        return None if self.keep is None else (self.layer, min(self.keep_visual, self.context.visual.numel()))

    def attend(self, module, query, key, value, attention_mask, **kwargs):
        layer = module.layer_idx
        if query.shape[2] > 1:  # prefill: rank at layer K-1; layers >= K already run shrunk
            if layer == self.layer - 1:
                self._rank(module, query, key, attention_mask, kwargs.get("scaling"))
            return plain(module, query, key, value, attention_mask, **kwargs)
        if layer >= self.layer and self.keep is not None:
            if layer == self.layer:
                self.attended.append(key.shape[2])
            if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-1] != key.shape[2]:
                attention_mask = gather_mask(attention_mask, self._full_index(attention_mask.shape[-1]))
        return plain(module, query, key, value, attention_mask, **kwargs)

    def _rank(self, module, query, key, attention_mask, scaling) -> None:
        import torch

        visual = self.context.visual.to(key.device)  # (Nv,)
        scores = last_query_attention(module, query, key, attention_mask, scaling)[visual]  # (Nv,)
        order = scores.argsort(descending=True, stable=True)[: self.keep_visual]
        keep = torch.ones(key.shape[2], dtype=torch.bool, device=key.device)  # (S,)
        keep[visual] = False
        keep[visual[order]] = True
        self.keep = keep.nonzero().squeeze(1)  # (S',)

    def _full_index(self, length: int):
        """Positions of the full cache that a shrunk layer holds: the kept prompt, then every generated token."""
        import torch

        generated = torch.arange(self.context.prompt_length, length, device=self.keep.device)
        return torch.cat([self.keep, generated])

    def _shrink(self, module, args, kwargs):
        """Forward pre-hook of layers >= K: gather every full-length prefill input to the kept positions."""
        if self.keep is None:  # decode steps (and anything before the ranking) pass through
            return None
        length = self.context.prompt_length
        args = tuple(self._gather(a, length) for a in args)
        kwargs = {name: self._gather(value, length, name) for name, value in kwargs.items()}
        return args, kwargs

    def _gather(self, value, length: int, name: str = ""):
        import torch

        if isinstance(value, tuple) and name == "position_embeddings":  # (cos, sin), sequence at dim -2
            return tuple(self._cached(t, length, dims=(-2,)) for t in value)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return value
        if name == "attention_mask":
            return self._cached(value, length, dims=(-2, -1)) if value.dim() == 4 else value
        if name == "position_ids":
            return self._cached(value, length, dims=(-1,))
        if value.dim() == 3:  # hidden states (B, S, D)
            return self._cached(value, length, dims=(1,))
        return value

    def _cached(self, tensor, length: int, dims: tuple[int, ...]):
        """`tensor` gathered to the kept positions along `dims` where they span the full prompt; every
        layer gets the same (full-length) inputs from the model's loop, so each is gathered once."""
        if any(tensor.shape[d] != length for d in dims):
            return tensor
        key = (id(tensor), dims)
        if key not in self._gathered:
            keep = self.keep.to(tensor.device)
            out = tensor
            for d in dims:
                out = out.index_select(d, keep)
            self._gathered[key] = (tensor, out)  # the source is held so its id cannot be reused
        return self._gathered[key][1]
