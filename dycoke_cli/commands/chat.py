"""`dycoke chat`: an interactive conversation about one encoded video.

Each turn extends the session's KV cache, so a turn prefills only its own tokens. Line editing and
history come from readline where the platform has it; the history persists between runs.

Interrupts follow what terminal users expect from a REPL (ollama, Python): Ctrl-C while an answer
streams stops that answer and returns to the prompt (the encoded video is kept; the half-written
turn is forgotten, and /stats says it was stopped), Ctrl-C at the prompt clears the line, Ctrl-D,
/bye or /quit leave. A line that is
not valid UTF-8 is read with replacement characters: a chat never dies of one bad line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, open_session, prepare

HELP = [("/help", "this list"),
        ("/reset", "forget the conversation (the video stays encoded)"),
        ("/stats", "the last answer's stats"),
        ("/bye, /quit", "leave (or Ctrl-D)"),
        ("Ctrl-C", "stops an answer; at the prompt, clears the line")]
QUIT = ("/bye", "/quit", "/exit")
STOPPED = object()  # what _turn returns for an answer Ctrl-C stopped


@o.with_flags(model=o.ModelFlags, sampling=o.SamplingFlags, compress=o.CompressFlags, gen=o.GenerationFlags)
def chat(
    video: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file.", show_default=False)],
    verbose: o.Verbose = False, debug: o.Debug = False,
    *, model: o.ModelFlags, sampling: o.SamplingFlags, compress: o.CompressFlags, gen: o.GenerationFlags,
) -> None:
    """Talk about a video: each turn continues the conversation. /help lists the commands."""
    with errors_to_exit(debug, verbose):
        from dycoke_cli.video.listing import one

        video = one(video)
        request = prepare(video, ["?"], model, sampling, compress, gen, gen.system)
        session = open_session(request, model, gen.system, verbose)
        run_chat(session, gen.generation(), verbose)


def _history_file():
    from dycoke_cli.paths import cache_root

    try:
        import readline
    except ImportError:  # platforms without readline still chat, without history
        return None
    path = cache_root() / "chat_history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
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
    from dycoke_cli import inputs, render, signals
    from dycoke_cli.commands.questions import clean
    from dycoke_cli.render.answer import print_stats

    terminal = read is input and sys.stdin.isatty() and sys.stdout.isatty()
    if read is input:
        if not terminal:  # keep the prompt out of piped answers; read lines of bounded length
            read = _prompt_on_stderr
        elif hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(errors="surrogateescape")  # bad bytes become U+FFFD in clean(), not an error
    history = _history_file() if terminal else None
    render.notice("video encoded; ask away (/help for commands)")
    last, stopped = None, False  # the last finished answer; whether a later one was stopped
    try:
        while True:
            try:
                raw = read("you> ")
                if isinstance(raw, inputs.TooLong):
                    render.error(f"that line is {raw.length:,} bytes, longer than the "
                                 f"{inputs.size_text(inputs.MAX_QUESTION_BYTES)} a question may hold; ask again")
                    continue
                line = clean(raw).strip()
            except KeyboardInterrupt:  # at the prompt: drop the line, ask again
                signals.handled()
                render.stderr.print()
                continue
            except EOFError:  # Ctrl-D: leave on a fresh line
                render.stderr.print()
                break
            if not line:
                continue
            if line in QUIT:
                break
            if line == "/help":
                render.lines(HELP, title="commands")
            elif line == "/reset":
                session.reset()
                render.notice("conversation cleared (the video stays encoded)")
            elif line == "/stats":
                if stopped:
                    render.notice("the last answer was stopped (Ctrl-C) before it finished: it has no stats"
                                  + ("; these are of the answer before it" if last is not None else ""))
                if last is not None:
                    print_stats(last.stats, verbose)
                elif not stopped:
                    render.notice("no answer yet")
            elif line.startswith("/"):
                render.notice(f"unknown command {line}; /help lists them")
            else:
                answer = _turn(session, line, generation)
                if answer is STOPPED:
                    stopped = True
                elif answer is not None:
                    last, stopped = answer, False
    finally:
        _save_history(history)


def _prompt_on_stderr(prompt: str):
    """One line of piped input (str), at most inputs.MAX_QUESTION_BYTES (else inputs.TooLong); the
    prompt goes to stderr."""
    from dycoke_cli import inputs

    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = inputs.read_line(sys.stdin.buffer, inputs.MAX_QUESTION_BYTES, "standard input")
    if line is None:
        raise EOFError
    return line if isinstance(line, inputs.TooLong) else line.decode("utf-8", "replace")


def _turn(session, question: str, generation):
    """One answer, streamed; Ctrl-C stops it and the conversation goes on without it. A turn that cannot
    fit (too long a line, a conversation past the model's context) is refused in one line first."""
    from dycoke_cli import render, signals
    from dycoke_cli.commands.questions import checked_question
    from dycoke_cli.errors import BadInputError
    from dycoke_cli.limits import check_turn

    adapter = session.lm.adapter
    try:
        question = checked_question(question)
        check_turn(adapter, session.kept.tokens.shape[0] + adapter.trailing_tokens,
                   session.history + [(question, None)], session.system, generation.max_new_tokens)
    except BadInputError as exc:
        render.error(f"{exc}; ask again")
        return None
    try:
        answer = session.chat(question, generation, on_text=render.write_text)
    except KeyboardInterrupt:
        signals.handled()
        session.discard_cache()  # the stopped generate may have half-extended it
        render.end_answer()
        render.notice("answer stopped; the turn is forgotten")
        return STOPPED
    render.end_answer()
    return answer
