"""Questions as users give them: arguments, `-` for standard input, any bytes.

A question must have text (an empty one would make the model describe nothing in particular); bytes
that are not UTF-8 (a binary argument, a stray byte on a pipe) become U+FFFD instead of crashing the
tokenizer, so one bad line never ends a run or a chat.
"""

from __future__ import annotations

import sys

from dycoke_cli.errors import BadInputError


def clean(text: str) -> str:
    """Undo Python's surrogate escapes of undecodable argv/stdin bytes: U+FFFD for each bad byte."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_questions(given: list[str], stdin=None) -> list[str]:
    """The questions of `ask`: each argument as is, `-` read whole from standard input."""
    questions = []
    for question in given:
        if question == "-":
            stream = stdin or sys.stdin
            data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
            question = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        questions.append(checked_question(question))
    return questions


def checked_question(text: str) -> str:
    """A question as the model gets it: undecodable bytes replaced, stripped, refused when empty (every
    command and `serve` ask the same question for the same text)."""
    question = clean(text).strip()
    if not question:
        raise BadInputError("a question is empty; ask something about the video")
    return question
