"""`dycoke chat`: an interactive conversation about one encoded video.

Each turn extends the session's KV cache, so a turn prefills only its own tokens. Line editing and
history come from readline where the platform has it; the history persists between runs.
"""

from __future__ import annotations

import sys

from dycoke_cli import render
from dycoke_cli.models.random_specs import cache_root

COMMANDS = "/reset forgets the conversation, /stats shows the last turn's stats, /quit leaves"


def _history_file():
    try:
        import readline
    except ImportError:  # platforms without readline still chat, without history
        return None
    path = cache_root() / "chat_history"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)
    return path


def _save_history(path) -> None:
    if path is None:
        return
    import readline

    try:
        readline.write_history_file(path)
    except OSError:
        pass


def run_chat(session, generation, verbose: bool = False, read=input) -> None:
    """Read questions until /quit or end of input; stream each answer to stdout."""
    history = _history_file() if read is input and sys.stdin.isatty() else None
    render.notice(f"video encoded; ask away ({COMMANDS})")
    last = None
    try:
        while True:
            try:
                line = read("you> ").strip()
            except EOFError:
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                session.reset()
                render.notice("conversation cleared (the video stays encoded)")
                continue
            if line == "/stats":
                if last is None:
                    render.notice("no answer yet")
                else:
                    render.print_stats(last.stats, verbose)
                continue
            if line.startswith("/"):
                render.notice(f"unknown command {line}; {COMMANDS}")
                continue
            last = session.chat(line, generation, on_text=render.write_text)
            render.end_answer()
    finally:
        _save_history(history)
