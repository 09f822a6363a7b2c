"""`dycoke methods`: the compression methods and their keys, from each method's own declaration."""

from __future__ import annotations

from dycoke_cli.commands import options as o


def methods(json_out: o.Listing = False) -> None:
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


def troff() -> str:
    """The man page's METHODS section, written from the declarations (tests/test_cli.py checks that
    man/dycoke.1 holds exactly this text between its METHODS markers)."""
    from dycoke_cli.compress.registry import METHODS

    def esc(text: str) -> str:
        return str(text).replace("\\", "\\\\").replace("-", "\\-")

    out = []
    for cls in METHODS.values():
        budget = f" \\-\\-budget sets \\fB{cls.budget_solves}\\fR." if cls.budget_solves else " Takes no budget."
        out += [".TP", f".B {cls.name}", f"{esc(cls.summary)}.{budget}"]
        if cls.params:
            out.append(".RS")
            for p in cls.params:
                out += [".TP", f".BR {p.name} \" = {esc(p.default)}   ({esc(p.domain())})\"", esc(p.help) + "."]
            out.append(".RE")
    return "\n".join(out) + "\n"
