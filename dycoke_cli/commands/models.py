"""`dycoke models`: what can be run, what is on disk, and how to get or remove it.

`dycoke models` lists the supported families, the built-in and random-weight specs (and which are
already built, with their size), and the Hub checkpoints in huggingface-hub's cache. `pull ID`
downloads a checkpoint (safetensors, configs, tokenizer) with huggingface-hub's progress bars, and
`rm` deletes a built random model or a cached Hub checkpoint.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit
from dycoke_cli.commands.help import Panels

app = typer.Typer(name="models", no_args_is_help=False, rich_markup_mode=None,
                  help="List supported models and cached checkpoints; pull or remove one.")


@app.callback(invoke_without_command=True)
def models(ctx: typer.Context, json_out: o.Listing = False, debug: o.Debug = False) -> None:
    """List model families, built-in and random-weight specs, and the Hub checkpoints in the local cache."""
    if ctx.invoked_subcommand is not None:
        return
    with errors_to_exit(debug):
        from dycoke_cli import render
        from dycoke_cli.models.catalogue import catalogue

        listing = catalogue()
        if json_out:
            render.print_json(listing)
            return
        render.write_text("Families (chosen from config.json's model_type):\n")
        for family in listing["families"]:
            render.write_text(f"  {family['family']:<18} {', '.join(family['model_types']):<22} "
                              f"default sampling: {family['default_sampling']}\n")
        render.write_text("Built-in and random-weight specs (--model NAME):\n")
        for spec in listing["specs"]:
            built = f"built, {render.format_bytes(spec['bytes'])}" if spec["built"] else "not built yet"
            render.write_text(f"  {spec['name']:<32} {spec['family']:<18} {built}\n")
        render.write_text("Hub checkpoints in the local cache:\n")
        if not listing["hub"]:
            render.write_text("  none (dycoke models pull ID downloads one)\n")
        for repo in listing["hub"]:
            state = repo["family"] or "not a supported family"
            render.write_text(f"  {repo['id']:<48} {render.format_bytes(repo['bytes']):>9}  {state}\n")


@app.command(cls=Panels)
def pull(
    model: Annotated[str, typer.Argument(metavar="ID", help="Hub id, e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf.")],
    debug: o.Debug = False,
) -> None:
    """Download a checkpoint from the Hub into huggingface-hub's cache (safetensors only)."""
    with errors_to_exit(debug):
        from dycoke_cli import render
        from dycoke_cli.models.source import resolve

        source = resolve(model, offline=False, pulling=True)
        render.notice(f"{model} is ready in {source.folder}")


@app.command(cls=Panels)
def rm(
    name: Annotated[Optional[str], typer.Argument(
        metavar="NAME", help="A random spec (random:...), or a Hub id in the local cache.")] = None,
    random: Annotated[bool, typer.Option("--random", help="Remove every built random-weight model.")] = False,
    debug: o.Debug = False,
) -> None:
    """Remove a built random-weight model or a cached Hub checkpoint."""
    with errors_to_exit(debug):
        from dycoke_cli import render
        from dycoke_cli.errors import BadInputError
        from dycoke_cli.models.catalogue import remove

        if (name is None) == (not random):
            raise BadInputError("give a NAME or --random (see dycoke models rm --help)")
        for line in remove(name, every_random=random):
            render.notice(line)
