"""Every byte the user sees: answers on stdout, tables, notices and errors on stderr, or JSON.

Rich is imported under render/ and nowhere else, so the rest of the code hands over plain data and
these modules decide how it looks: this one holds the console and the primitives, answer.py the
per-answer stats, batch.py and profile.py their commands' views.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def write_text(text: str) -> None:
    """A piece of a streamed answer, flushed so it shows as it is generated."""
    from dycoke_cli import stdout

    stdout.write(text)


def end_answer() -> None:
    write_text("\n")


def print_json(obj: dict) -> None:
    write_text(json.dumps(obj, ensure_ascii=False) + "\n")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """`text` with its control characters escaped (a newline in a file name becomes \\n, an escape
    sequence cannot drive the terminal): an error or a note is always exactly one line."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0], f"\\x{ord(m[0]):02x}"), text)


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(one_line(message))}", markup=True, highlight=False)


def notice(message: str) -> None:
    stderr.print(f"[yellow]note:[/] {escape(one_line(message))}", markup=True, highlight=False)


def video_header(path) -> None:
    """Which video the next answers are about, when one command answers several."""
    stderr.print(f"[bold]== {escape(one_line(str(path)))} ==[/]", markup=True, highlight=False)


def question_header(index: int, total: int, question: str) -> None:
    stderr.print(f"[bold]Q{index}/{total}:[/] {escape(question)}", markup=True, highlight=False)


def format_seconds(s: float) -> str:
    """Seconds for people: milliseconds below one second. Shared by every table."""
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


TABLE_WIDTH = 80


def lines(rows: list[tuple[str, str]], title: str | None = None) -> None:
    """Label/value rows, labels aligned, values wrapped at word boundaries to fit TABLE_WIDTH columns
    (continuations under the value), no trailing padding (logs and pipes stay clean)."""
    import textwrap

    if title:
        stderr.print(f"[bold]{escape(title)}[/]", markup=True, highlight=False)
    width = max((len(label) for label, _ in rows), default=0)
    room = max(TABLE_WIDTH - width - 2, 20)
    for label, value in rows:
        parts = textwrap.wrap(value, room, break_long_words=False, break_on_hyphens=False) or [""]
        stderr.print(f"[bold]{escape(label)}[/]{' ' * (width - len(label))}  {escape(parts[0])}", markup=True,
                     highlight=False)
        for part in parts[1:]:
            stderr.print(f"{' ' * (width + 2)}{escape(part)}", markup=False, highlight=False)


@contextmanager
def working(text: str):
    """A spinner with the elapsed time on stderr while slow work runs (nothing off a terminal)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not stderr.is_terminal:
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr,
                  transient=True) as progress:
        progress.add_task(escape(text), total=None)
        yield


def quiet_libraries(verbose: bool) -> None:
    """Keep transformers', huggingface-hub's and bitsandbytes' warnings and logs off the terminal unless
    -v/--debug: they are not actionable for a user of this tool, and a log line would land in the
    middle of a streamed answer."""
    import logging
    import warnings

    level = logging.WARNING if verbose else logging.ERROR
    for name in ("transformers", "huggingface_hub", "bitsandbytes", "accelerate", "torch"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import os

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # huggingface-hub's retry notes, read at its import
