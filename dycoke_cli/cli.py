"""The `dycoke` command line: one module per command under commands/, registered here.

torch and transformers are imported inside the commands, so `dycoke --help` stays fast. Failures
inside a command become one line and an exit code in `commands.common.errors_to_exit`; usage
errors (an unknown option, a value out of range, a missing argument) become one line here, with the
command's --help named, instead of a usage box.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from dycoke_cli import __version__
from dycoke_cli.commands import ask, cache, chat, methods, models, profile, run


class _OneLineErrors(TyperGroup):
    """Usage errors as one line on stderr, exit 2; Ctrl-C exit 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from typer._click import exceptions as click_errors

        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                **extra)
        except click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help(), err=True)
            code = 2
        except click_errors.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message}{where}", err=True)
            code = exc.exit_code
        except click_errors.Abort:
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


class _Panels(TyperCommand):
    """Plain-text help with the options grouped under their panel (Model, Video sampling, ...), wrapped
    at the terminal's width on word boundaries, full defaults and choices shown."""

    def format_options(self, ctx, formatter) -> None:
        panels: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            panel = "Arguments" if param.param_type_name == "argument" else (
                getattr(param, "rich_help_panel", None) or "Options")
            panels.setdefault(panel, []).append(record)
        for name in sorted(panels, key=lambda n: (n != "Arguments", n == "Options")):
            with formatter.section(name):
                _write_rows(formatter, panels[name])


def _write_rows(formatter, rows: list[tuple[str, str]], first_max: int = 30, gap: int = 2) -> None:
    """click's definition list, wrapped without breaking at hyphens (model ids stay whole)."""
    import textwrap

    width = min(max(len(first) for first, _ in rows), first_max)
    indent = formatter.current_indent
    text_width = max(formatter.width - indent - width - gap, 20)
    for first, second in rows:
        lines = textwrap.wrap(second, text_width, break_on_hyphens=False, break_long_words=False)
        if not lines:
            formatter.write(f"{'':{indent}}{first}\n")
            continue
        if len(first) <= width:
            formatter.write(f"{'':{indent}}{first:{width}}{'':{gap}}{lines[0]}\n")
            rest = lines[1:]
        else:
            formatter.write(f"{'':{indent}}{first}\n")
            rest = lines
        for line in rest:
            formatter.write(f"{'':{indent + width + gap}}{line}\n")


app = typer.Typer(
    name="dycoke", cls=_OneLineErrors, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Answer questions about videos with a local video LLM, made fast by token compression (DyCoke first).",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dycoke {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Answer questions about videos with a local video LLM, made fast by token compression (DyCoke first)."""


app.command(cls=_Panels, short_help="Answer questions about a video.")(ask.ask)
app.command(cls=_Panels, short_help="Talk about a video, turn by turn.")(chat.chat)
app.command(cls=_Panels, short_help="Answer a JSONL file of questions (resumable).")(run.run)
app.command(cls=_Panels, short_help="Merge answer files (shards) into one.")(run.merge)
app.command(cls=_Panels, short_help="Compare compression settings side by side.")(profile.profile)
app.command(cls=_Panels, short_help="List compression methods and their keys.")(methods.methods)
app.add_typer(models.app, name="models", short_help="List models on disk; pull or remove one.")
app.add_typer(cache.app, name="cache", short_help="List or remove encoded videos in the video cache.")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dycoke")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
