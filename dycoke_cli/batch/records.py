"""Reading a JSONL file of questions into checked records.

One bad line must not stop a run of a million: every line becomes either a `Record` ready to run or a
`Malformed` carrying its line number and the reason, which the run records as a failed answer. Only
what makes the whole file unusable (it cannot be read, two lines claim the same id) is an error.

A line is an object with `video` (a path; relative to the JSONL file's folder, or to the working
directory for stdin) and `question`, and optionally `id` (default: the line number), `options`,
`answer`, `task`, `frames`, `max_new_tokens` and `compress` (a `--compress` spec for this record).
Other keys are ignored, so dataset files with extra metadata can be used as they are.

The file is read as bytes, line by line: a UTF-8 byte order mark is dropped, and a line that is not
UTF-8, not JSON, or nested too deeply for the parser is a failed record with its line number, never
the end of the run.
"""

from __future__ import annotations

import codecs
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from dycoke_cli import inputs
from dycoke_cli.batch import choices
from dycoke_cli.errors import BadInputError, DycokeError
from dycoke_cli.video.frames import MAX_FRAMES


@dataclass(frozen=True)
class Record:
    line: int
    id: str | int
    video: str  # as written in the file: what the answer line repeats
    path: Path  # resolved
    question: str
    options: list[str] | None = None
    answer: str | None = None  # as written
    expected: str | None = None  # the letter `answer` names (multiple choice), else `answer` itself
    task: str | None = None
    frames: int | None = None
    max_new_tokens: int | None = None
    compress: object | None = None  # compress.spec.CompressionSpec for this record, None: the run's

    @property
    def prompt(self) -> str:
        return choices.prompt(self.question, self.options) if self.options else self.question


@dataclass(frozen=True)
class Malformed:
    line: int
    id: str | int  # the line's own id where its structure says it, else line_id(line)
    error: str  # "line N: why"


def line_id(number: int) -> str:
    """The id of a line whose own id cannot be read: "line:N", a string that no integer id equals."""
    return f"line:{number}"


class _Bad(Exception):
    """A reason a line cannot be used (becomes a Malformed)."""


def read_records(source: str) -> list[Record | Malformed]:
    """Every non-blank line of `source` ("-" is stdin), in order; ids must be unique. Read line by line
    within the limits of dycoke_cli.inputs; a file must be a regular file."""
    if source == "-":
        return _records(sys.stdin.buffer, "standard input", Path.cwd())
    path = Path(source)
    with inputs.open_regular(path, "questions file") as stream:
        try:
            return _records(stream, f"questions file '{source}'", path.parent)
        except OSError as exc:
            raise BadInputError(f"cannot read questions from '{source}': {_reason(exc)}") from None


def _records(stream, what: str, base: Path) -> list[Record | Malformed]:
    records, seen, exists = [], {}, {}
    rows = inputs.lines(stream, inputs.MAX_LINE_BYTES, inputs.MAX_QUESTIONS_BYTES, what)
    for number, raw in enumerate(rows, 1):
        if isinstance(raw, inputs.TooLong):
            record = Malformed(number, line_id(number), f"line {number}: {raw.length:,} bytes, longer than the "
                                               f"{inputs.size_text(inputs.MAX_LINE_BYTES)} a line may hold")
        else:
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            record = parse_line(raw, number, base, exists)
        key = json.dumps(record.id)
        if key in seen:
            raise BadInputError(f"line {number}: id {key} is already used on line {seen[key]}; ids must be unique")
        seen[key] = number
        records.append(record)
    return records


def parse_line(raw: bytes | str, number: int, base: Path, exists: dict | None = None) -> Record | Malformed:
    """One line -> Record, or Malformed with "line N: reason". `exists` caches video checks by path."""
    unknown = line_id(number)
    try:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        return Malformed(number, _recovered_id(raw, number), f"line {number}: not valid UTF-8 (bad byte at column "
                                                             f"{exc.start + 1})")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Malformed(number, unknown, f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
    except (RecursionError, ValueError) as exc:  # nesting past the parser's depth, a 5,000-digit number
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        return Malformed(number, unknown, f"line {number}: not usable JSON ({reason})")
    if not isinstance(obj, dict):
        return Malformed(number, unknown, f"line {number}: expected a JSON object, got {type(obj).__name__}")
    record_id = obj.get("id", number)
    if isinstance(record_id, bool) or not isinstance(record_id, (str, int)):
        return Malformed(number, unknown, f"line {number}: 'id' must be a string or an integer")
    try:
        return _record(obj, number, record_id, base, {} if exists is None else exists)
    except _Bad as exc:
        return Malformed(number, record_id, f"line {number}: {exc}")


def _recovered_id(raw: bytes, number: int) -> str | int:
    """The id of a line that is not UTF-8 when its bad bytes lie elsewhere (inside its question, say):
    the line read with replacement characters still parses, and its id is whole. Else line_id(number)."""
    try:
        obj = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return line_id(number)
    record_id = obj.get("id", number) if isinstance(obj, dict) else None
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        return record_id
    if isinstance(record_id, str) and "\ufffd" not in record_id:
        return record_id
    return line_id(number)


def _record(obj: dict, number: int, record_id, base: Path, exists: dict) -> Record:
    video = _text(obj, "video", required=True)
    question = _text(obj, "question", required=True)
    options = obj.get("options")
    if options is not None and not (isinstance(options, list) and 2 <= len(options) <= choices.MAX_OPTIONS
                                    and all(isinstance(o, str) and o.strip() for o in options)):
        raise _Bad(f"'options' must be a list of 2 to {choices.MAX_OPTIONS} non-empty strings")
    answer = _text(obj, "answer")
    expected = answer
    if answer is not None and options:
        expected = choices.expected_letter(answer, options)
        if expected is None:
            letters = choices.LETTERS[: len(options)]
            raise _Bad(f"'answer' {answer!r} is neither a letter {letters[0]}-{letters[-1]} nor one of the options")
    path = Path(video).expanduser()
    path = path if path.is_absolute() else base / path
    if path not in exists:
        exists[path] = _video_problem(path)
    if exists[path]:
        raise _Bad(exists[path])
    return Record(line=number, id=record_id, video=video, path=path, question=question, options=options,
                  answer=answer, expected=expected, task=_text(obj, "task"),
                  frames=_count(obj, "frames", MAX_FRAMES), max_new_tokens=_count(obj, "max_new_tokens", 1_000_000),
                  compress=_compress(obj))


def _video_problem(path: Path) -> str | None:
    from dycoke_cli.video.probe import check_path

    try:
        check_path(str(path))
    except DycokeError as exc:
        return str(exc)
    return None


def _text(obj: dict, key: str, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _Bad(f"missing field '{key}'")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _Bad(f"'{key}' must be a {'non-empty ' if required else ''}string, got {json.dumps(value)[:40]}")
    return value


def _count(obj: dict, key: str, limit: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise _Bad(f"'{key}' must be an integer from 1 to {limit:,}, got {json.dumps(value)[:40]}")
    return value


def _compress(obj: dict):
    """The record's own compression spec, checked like --compress."""
    from dycoke_cli.compress.spec import parse_spec

    text = _text(obj, "compress")
    if text is None:
        return None
    try:
        return parse_spec(text, "'compress'")
    except DycokeError as exc:
        raise _Bad(str(exc)) from None


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
