"""Requests checked against the model before any decoding or model work: nothing runs away.

A prompt longer than the language model's context would prefill for minutes and then fail (or
silently degrade); the count is known from the video's frame plan, the family's tokens per frame,
the method's expected selection and the tokenized question, so it is refused up front with the
numbers and what to change.
"""

from __future__ import annotations

from dycoke_cli.compress.base import Method, VisualLayout
from dycoke_cli.errors import BadInputError


def visual_tokens(adapter, method: Method, frames: int, size: tuple[int, int]) -> int:
    """Visual tokens that reach the language model for `frames` frames of a width x height video."""
    width, height = size
    per_frame = adapter.frame_tokens(height, width)
    groups = -(-frames // adapter.group)
    return method.expected_tokens(VisualLayout(frames=groups, grid=(1, per_frame))) + adapter.trailing_tokens


def check_context(adapter, method: Method, frames: int, size: tuple[int, int], questions: list[str],
                  system: str | None, max_new_tokens: int) -> None:
    """Refuse a request whose prompt and answer cannot fit the model's context window."""
    context = getattr(adapter.text_config, "max_position_embeddings", None)
    if not context:
        return
    visual = visual_tokens(adapter, method, frames, size)
    text = max(adapter.text_tokens([(q, None)], system) for q in questions)
    need = visual + text + max_new_tokens
    if need > context:
        raise BadInputError(
            f"the prompt needs {need:,} positions ({visual:,} visual tokens from {frames} frames + {text:,} text + "
            f"{max_new_tokens:,} new tokens) but the model's context holds {context:,}; use fewer --frames, "
            "a --budget, a shorter question or a lower --max-new-tokens"
        )
