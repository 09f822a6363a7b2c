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
    need = visual + text + max_new_tokens
    context = _exceeded(adapter, need)
    if context:
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
    need = visual + text + max_new_tokens
    context = _exceeded(adapter, need)
    if context:
        raise BadInputError(
            f"this turn needs {need:,} positions ({visual:,} visual tokens + {text:,} text of the conversation + "
            f"{max_new_tokens:,} new tokens) but the model's context holds {context:,}; ask something shorter, "
            "or /reset to start the conversation over"
        )


def _exceeded(adapter, need: int) -> int | None:
    """The model's context length when `need` positions do not fit in it; None when they fit (or the
    config states no length)."""
    context = getattr(adapter.text_config, "max_position_embeddings", None)
    return context if context and need > context else None


MAX_SETTINGS = 64  # settings one `profile` or `run` compares: each costs a full generation per question


def check_settings(count: int, command: str = "profile") -> None:
    """Refuse a comparison of more settings than MAX_SETTINGS before any work (a 10,000-value sweep
    would run for hours; a run holds an answers file open per setting)."""
    if count > MAX_SETTINGS:
        shorten = "--sweep or the --compress list" if command == "profile" else "the --compress list"
        raise SettingsError(f"{count:,} settings to {command}; at most {MAX_SETTINGS} are compared in one run "
                            f"(shorten {shorten})")
