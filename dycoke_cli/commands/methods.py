"""`dycoke methods`: the compression methods and their keys, from each method's own declaration."""

from __future__ import annotations

from typing import Annotated

import typer

from dycoke_cli.commands import options as o


def methods(json_out: o.Json = False) -> None:
    """List the compression methods for --compress, with their keys, ranges and defaults."""
    from dycoke_cli import render
    from dycoke_cli.compress.registry import METHODS

    if json_out:
        for cls in METHODS.values():
            render.print_json({"method": cls.name, "summary": cls.summary, "budget_sets": cls.budget_solves,
                               "params": [{"name": p.name, "type": p.kind.__name__, "default": p.default,
                                           "domain": p.domain(), "help": p.help} for p in cls.params]})
        return
    for cls in METHODS.values():
        budget = f" (--budget sets {cls.budget_solves})" if cls.budget_solves else " (takes no budget)"
        render.write_text(f"{cls.name}: {cls.summary}{budget}\n")
        for p in cls.params:
            render.write_text(f"  {p.name}={p.default}  {p.domain()}: {p.help}\n")
