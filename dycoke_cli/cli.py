"""The `dycoke` command line: parse flags, call the engine, hand results to render.

torch and transformers are imported inside the commands, so `dycoke --help` stays fast. Errors are
mapped to one line and an exit code in exactly one place,
`commands.common.errors_to_exit`. Each command lives in its own module under commands/.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from dycoke_cli import __version__
from dycoke_cli.commands import ask as ask_command
from dycoke_cli.commands import profile as profile_command
from dycoke_cli.commands import run as run_command

app = typer.Typer(
    name="dycoke", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Answer questions about videos with a local video LLM, made fast by DyCoke token compression.",
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
    """Answer questions about videos with a local video LLM, made fast by DyCoke token compression."""


app.command()(ask_command.ask)
app.command()(ask_command.chat)
app.command()(run_command.run)
app.command()(run_command.merge)
app.command()(profile_command.profile)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dycoke")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
