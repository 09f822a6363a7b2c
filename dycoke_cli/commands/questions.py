"""Questions as users give them: arguments, `-` for standard input, any bytes.

A question must have text (an empty one would make the model describe nothing in particular); bytes
that are not UTF-8 (a binary argument, a stray byte on a pipe) become U+FFFD instead of crashing the
tokenizer, so one bad line never ends a run or a chat.
"""

from __future__ import annotations

import sys

from dycoke_cli.errors import BadInputError
from dycoke_cli.inputs import MAX_QUESTION_BYTES, read_capped, size_text


def clean(text: str) -> str:
    """Undo Python's surrogate escapes of undecodable argv/stdin bytes: U+FFFD for each bad byte."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_questions(given: list[str], stdin=None) -> list[str]:
    """The questions of `ask`: each argument as is, `-` read whole from standard input (at most
    inputs.MAX_QUESTION_BYTES); no argument at all reads standard input when it is not a terminal (a
    pipe, a file), as llm does, and is a usage error on a terminal."""
    if not given:
        stream = stdin or sys.stdin
        if stream is None or stream.isatty():
            raise BadInputError("no question: give one after the video, or pipe one in "
                                "(echo \"What happens?\" | dycoke ask VIDEO; see dycoke ask --help)")
        given, piped = ["-"], True
    else:
        piped = False
    questions = []
    for question in given:
        if question == "-":
            stream = stdin or sys.stdin
            stream = getattr(stream, "buffer", stream)
            data = read_capped(stream, MAX_QUESTION_BYTES, "the question on standard input")
            question = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if piped and not clean(question).strip():
            raise BadInputError("no question: none was given after the video and standard input was empty "
                                "(see dycoke ask --help)")
        questions.append(checked_question(question))
    return questions


def checked_question(text: str) -> str:
    """A question as the model gets it: undecodable bytes replaced, stripped, refused when empty or over
    inputs.MAX_QUESTION_BYTES of UTF-8 (every command and `serve` ask the same question for the same text)."""
    question = clean(text).strip()
    if not question:
        raise BadInputError("a question is empty; ask something about the video")
    size = len(question.encode("utf-8"))
    if size > MAX_QUESTION_BYTES:
        raise BadInputError(f"a question is {size:,} bytes, longer than the {size_text(MAX_QUESTION_BYTES)} a "
                            "question may hold")
    return question
