"""Multiple-choice questions: the prompt the model sees and how its answer becomes a letter.

Evaluation sets (MVBench, NExT-QA, ...) give a question and a list of options and score the letter
picked. The prompt follows the format LLaVA-OneVision was evaluated with (lmms-eval): the question,
one "A. option" line per choice, then an instruction to answer with the letter alone. Reading the
answer back is deliberately simple and documented, so a score can be reproduced by hand:

  1. the whole answer equals one option's text (case, spacing and a final period ignored), or
  2. the first standalone capital letter among the options' letters ("B", "(B)", "B. dog", "Answer: B"),
  3. or the whole answer is one lowercase letter among them ("b", "b.").

A letter is standalone when no other letter touches it, so the "A" of "A dog" counts but the "a" of
"a dog" does not (lowercase is only read in rule 3, where it cannot be an article).
"""

from __future__ import annotations

import re
from string import ascii_uppercase as LETTERS

INSTRUCTION = "Answer with the option's letter from the given choices directly."
MAX_OPTIONS = len(LETTERS)


def prompt(question: str, options: list[str]) -> str:
    """The question, one lettered line per option, then the instruction."""
    lines = [question] + [f"{letter}. {option}" for letter, option in zip(LETTERS, options)]
    return "\n".join(lines + [INSTRUCTION])


def normalize(text: str) -> str:
    """Case and whitespace folded, a trailing period dropped: what "the same answer" means."""
    return " ".join(text.split()).rstrip(".").strip().casefold()


def expected_letter(answer: str, options: list[str]) -> str | None:
    """The letter a record's `answer` names: a letter among the options ("b", " B ", "(B)", "B.") or an
    option's text; None when it is neither."""
    letters = LETTERS[: len(options)]
    bare = normalize(answer).strip("()").upper()
    if len(bare) == 1 and bare in letters:
        return bare
    return _option_match(answer, options)


def chosen_letter(text: str, options: list[str]) -> str | None:
    """The letter a generated answer picks (rules 1-3 of the module docstring), or None."""
    letters = LETTERS[: len(options)]
    matched = _option_match(text, options)
    if matched:
        return matched
    for found in re.finditer(r"(?<![A-Za-z])[A-Z](?![A-Za-z])", text):
        if found.group() in letters:
            return found.group()
    bare = normalize(text).strip("()")
    return bare.upper() if len(bare) == 1 and bare.upper() in letters else None


def _option_match(text: str, options: list[str]) -> str | None:
    folded = normalize(text)
    for letter, option in zip(LETTERS, options):
        if folded == normalize(option):
            return letter
    return None


def is_correct(text: str, expected: str, options: list[str] | None) -> bool:
    """Multiple choice: the chosen letter is the expected one. Open question: the same text, normalized."""
    if options:
        return chosen_letter(text, options) == expected
    return normalize(text) == normalize(expected)
