"""How one `generate` call is driven: its sampling arguments, a stop asked between tokens, the text
streamed as it comes (with the first tokens' times), and why it ended.

Apart from the engine, which decides what is generated; this is only the plumbing of transformers'
public generate API (StoppingCriteria, the streamer protocol).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from dycoke_cli.settings import Generation
from dycoke_cli.stats import synchronize


def stopping_criteria(should_stop: Callable[[], bool] | None):
    """`should_stop` as transformers' public StoppingCriteria, asked after every token (None: none)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    if should_stop is None:
        return None

    class _Asked(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:  # ids (B, L) -> (B,)
            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Asked()])


def finish_reason(ids: list[int], eos: list[int], max_new_tokens: int) -> str:
    """"stop" when the model ended its answer (an end-of-sequence token, or before the limit), "length"
    when generation was cut at max_new_tokens."""
    if ids and ids[-1] in eos:
        return "stop"
    return "length" if len(ids) >= max_new_tokens else "stop"


def sampling_kwargs(generation: Generation, adapter) -> dict:
    """`generate`'s keyword arguments for these settings: greedy at temperature 0, seeded sampling else."""
    eos = adapter.eos_token_ids
    kwargs = dict(max_new_tokens=generation.max_new_tokens, min_new_tokens=generation.min_new_tokens,
                  eos_token_id=eos, pad_token_id=adapter.tokenizer.pad_token_id or eos[0])
    if generation.temperature > 0:
        torch.manual_seed(generation.seed)
        kwargs.update(do_sample=True, temperature=generation.temperature, top_p=generation.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


@dataclass
class Streamer:
    """Receives token ids from `generate`, notes when the first arrives, emits text deltas."""

    decode: Callable[[list[int]], str]
    on_text: Callable[[str], None] | None
    device: str
    first_token_at: float | None = None
    second_token_at: float | None = None  # the end of the first decode step
    _prompt_seen: bool = False
    _ids: list[int] = field(default_factory=list)
    _emitted: int = 0

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first echoes the prompt
            self._prompt_seen = True
            return
        if self.first_token_at is None or self.second_token_at is None:
            synchronize(self.device)
            now = time.perf_counter()
            if self.first_token_at is None:
                self.first_token_at = now
            else:
                self.second_token_at = now
        self._ids.extend(value.reshape(-1).tolist())
        if self.on_text is not None:
            text = self.decode(self._ids)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                self.on_text(text[self._emitted:])
                self._emitted = len(text)

    def end(self) -> None:
        if self.on_text is not None:
            text = self.decode(self._ids)
            if len(text) > self._emitted:
                self.on_text(text[self._emitted:])
                self._emitted = len(text)
