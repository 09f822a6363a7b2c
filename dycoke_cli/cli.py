"""The `dycoke` command line: one module per command under commands/, registered here.

torch and transformers are imported inside the commands, so `dycoke --help` stays fast. Failures
inside a command become one line and an exit code in `commands.common.errors_to_exit`; usage
errors (an unknown option, a value out of range, a missing argument) become one line here, with the
command's --help named, instead of a usage box.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from dycoke_cli import __version__
from dycoke_cli.commands import ask, chat, methods, models, profile, run, sample, serve
from dycoke_cli.commands.help import HELP_OPTIONS, Panels


class _OneLineErrors(TyperGroup):
    """Usage errors as one line on stderr, exit 2; Ctrl-C exit 130, SIGTERM 143; a stdout that went
    away (`| head -1`) ends quietly with 141 (dycoke_cli.stdout)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from dycoke_cli import signals, stdout

        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                **extra)
        except typer.TyperException as exc:  # click's usage errors, through typer's public base class
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # told apart by name, as typer itself does
                typer.echo(ctx.get_help(), err=True)
                code = 2
            else:
                from dycoke_cli.render import one_line

                where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
                typer.echo(f"error: {one_line(message)}{where}", err=True)
                code = getattr(exc, "exit_code", 2)
        except typer.Abort:  # click's name for a KeyboardInterrupt outside a command
            code = signals.SIGINT_STATUS
        except signals.Terminated:
            code = signals.SIGTERM_STATUS
        except (OSError, stdout.StdoutError) as exc:  # stdout gone: a command's answers, or click's own --help
            code = stdout.failed(exc)
        code = code if isinstance(code, int) else 0
        code = stdout.settle() or code
        code = signals.exit_status(code)
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    name="dycoke", cls=_OneLineErrors, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
    help="Answer questions about videos with a local video LLM, made fast by token compression (DyCoke first).",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dycoke {__version__}")
        raise typer.Exit()


def _man(value: bool) -> None:
    """The manual page, installed with the package: shown through man(1) on a terminal, its troff source
    otherwise (`dycoke --man > dycoke.1`, `dycoke --man | man -l -`)."""
    if not value:
        return
    import shutil
    import subprocess
    from importlib.resources import as_file, files

    from dycoke_cli import stdout

    with as_file(files("dycoke_cli") / "man" / "dycoke.1") as page:
        if sys.stdout.isatty() and shutil.which("man"):
            raise typer.Exit(subprocess.run(["man", "-l", str(page)]).returncode)
        stdout.write(page.read_text(encoding="utf-8"))
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    man: Annotated[Optional[bool], typer.Option("--man", callback=_man, is_eager=True,
                                                help="Show the manual page (its troff source when stdout is not "
                                                     "a terminal) and exit.")] = None,
) -> None:
    """Answer questions about videos with a local video LLM, made fast by token compression (DyCoke first)."""


app.command(cls=Panels, short_help="Answer questions about a video.")(ask.ask)
app.command(cls=Panels, short_help="Talk about a video, turn by turn.")(chat.chat)
app.command(cls=Panels, short_help="Answer a JSONL file of questions (resumable).")(run.run)
app.command(cls=Panels, short_help="Merge answer files (shards) into one.")(run.merge)
app.command(cls=Panels, short_help="Compare compression settings side by side.")(profile.profile)
app.command(cls=Panels, short_help="List compression methods and their keys.")(methods.methods)
app.command(cls=Panels, short_help="Write generated clips with known answers.")(sample.sample)
app.command(cls=Panels, short_help="Serve the model over an OpenAI-compatible HTTP API.")(serve.serve)
app.add_typer(models.app, name="models", short_help="List models on disk; pull or remove one.")


def main() -> None:
    """Console-script entry point (dycoke_cli.__main__ installs the signal handlers before importing this
    module; installing again is a no-op). A command stopped by a signal ends at once with its status:
    the interpreter's exit would wait for worker threads first."""
    from dycoke_cli import signals, stdout

    signals.install()
    stdout.guard()
    code = 0
    try:
        try:
            app(prog_name="dycoke")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        signals.close()
    except (KeyboardInterrupt, signals.Terminated) as exc:  # landed after the command had returned
        signals.close()
        code = signals.status_of(exc)
    status = signals.exit_status(code)
    if signals.stopping():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a stream that went away: the status is what matters now
                pass
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
