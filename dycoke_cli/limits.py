"""Requests checked against the model before any decoding or model work: nothing runs away.

A prompt longer than the language model's context would prefill for minutes and then fail (or
silently degrade); the count is known from the plan (the video's frames, the family's tokens per
frame, the method's expected selection) and the tokenized question, so it is refused up front with
the numbers and what to change.
"""

from __future__ import annotations

from dycoke_cli.errors import BadInputError


def check_context(adapter, visual: int, frames: int, questions: list, system: str | None,
                  max_new_tokens: int) -> None:
    """Refuse a request whose prompt and answer cannot fit the model's context window: `visual` tokens
    from `frames` frames reach the language model (the plan knows how many). Each item of `questions`
    is a question asked on its own, or a whole conversation (a list of (question, answer) turns, the
    last answer None) as a server request carries it."""
    context = getattr(adapter.text_config, "max_position_embeddings", None)
    if not context:
        return
    text = max(adapter.text_tokens(q if isinstance(q, list) else [(q, None)], system) for q in questions)
    need = visual + text + max_new_tokens
    if need > context:
        raise BadInputError(
            f"the prompt needs {need:,} positions ({visual:,} visual tokens from {frames} frames + {text:,} text + "
            f"{max_new_tokens:,} new tokens) but the model's context holds {context:,}; use fewer --frames, "
            "a --budget, a shorter question or a lower --max-new-tokens"
        )
