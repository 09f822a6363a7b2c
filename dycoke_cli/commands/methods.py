"""`dycoke methods`: the compression methods and their keys, from each method's own declaration."""

from __future__ import annotations

from dycoke_cli.commands import options as o


TABLE_WIDTH = 80


def methods(json_out: o.Listing = False) -> None:
    """List the compression methods for --compress, with their keys, ranges and defaults: a table on a
    terminal, one line per key in a pipe."""
    import sys

    from dycoke_cli import render
    from dycoke_cli.compress.registry import METHODS

    if not json_out and sys.stdout.isatty():
        import shutil

        render.write_text("".join(f"{line}\n" for line in table(min(shutil.get_terminal_size().columns,
                                                                      TABLE_WIDTH))))
        return
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


def table(width: int = TABLE_WIDTH) -> list[str]:
    """Every method as a heading line and one row per key (KEY=DEFAULT, then its range and what it
    does), wrapped so no line is wider than `width`."""
    import textwrap

    from dycoke_cli.compress.registry import METHODS

    first = max(len(f"{p.name}={p.default}") for cls in METHODS.values() for p in cls.params)
    room = max(width - 2 - first - 2, 20)
    out = []
    for cls in METHODS.values():
        budget = f" --budget sets {cls.budget_solves}." if cls.budget_solves else " Takes no budget."
        out += textwrap.wrap(f"{cls.name}: {cls.summary}.{budget}", width, subsequent_indent="    ",
                             break_on_hyphens=False)
        for p in cls.params:
            lines = textwrap.wrap(f"{p.domain()}: {p.help}", room, break_on_hyphens=False)
            out.append(f"  {f'{p.name}={p.default}':{first}}  {lines[0]}")
            out += [f"{'':{2 + first + 2}}{line}" for line in lines[1:]]
    return out


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
