"""Requests checked against the model before any decoding or model work: nothing runs away.

A prompt longer than the language model's context would prefill for minutes and then fail (or
silently degrade); the count is known from the plan (the video's frames, the family's tokens per
frame, the method's expected selection) and the tokenized question, so it is refused up front with
the numbers and what to change.
"""

from __future__ import annotations

from dycoke_cli.errors import BadInputError, SettingsError


def check_context(adapter, visual: int, frames: int, questions: list, system: str | None,
                  max_new_tokens: int) -> None:
    """Refuse a request whose prompt and answer cannot fit the model's context window: `visual` tokens
    from `frames` frames reach the language model (the plan knows how many). Each item of `questions`
    is a question asked on its own, or a whole conversation (a list of (question, answer) turns, the
    last answer None) as a server request carries it."""
    text = max(adapter.text_tokens(q if isinstance(q, list) else [(q, None)], system) for q in questions)
    need, context = visual + text + max_new_tokens, _context(adapter)
    if context and need > context:
        raise BadInputError(
            f"the prompt needs {need:,} positions ({visual:,} visual tokens from {frames} frames + {text:,} text + "
            f"{max_new_tokens:,} new tokens) but the model's context holds {context:,}; use fewer --frames, "
            "a --budget, a shorter question or a lower --max-new-tokens"
        )


def check_turn(adapter, visual: int, turns: list[tuple[str, str | None]], system: str | None,
               max_new_tokens: int) -> None:
    """Refuse a chat turn whose conversation (earlier turns + the new line), video and answer cannot fit
    the model's context window: checked before generating, since generating past the context runs
    for minutes and degrades silently. `visual` is the session's kept visual tokens."""
    text = adapter.text_tokens(turns, system)
    need, context = visual + text + max_new_tokens, _context(adapter)
    if context and need > context:
        raise BadInputError(
            f"this turn needs {need:,} positions ({visual:,} visual tokens + {text:,} text of the conversation + "
            f"{max_new_tokens:,} new tokens) but the model's context holds {context:,}; ask something shorter, "
            "or /reset to start the conversation over"
        )


def _context(adapter) -> int | None:
    return getattr(adapter.text_config, "max_position_embeddings", None)


MAX_SETTINGS = 64  # settings one `profile` compares: each costs a full generation per round


def check_settings(count: int) -> None:
    """Refuse a profile of more settings than MAX_SETTINGS before any work (a 10,000-value sweep would
    run for hours)."""
    if count > MAX_SETTINGS:
        raise SettingsError(f"{count:,} settings to profile; at most {MAX_SETTINGS} are compared in one run "
                            "(shorten --sweep or the --compress list)")
