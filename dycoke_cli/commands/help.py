"""How `--help` reads: options grouped under their panel (Model, Video sampling, ...), arguments named
as the user types them, wrapped at the terminal's width on word boundaries.

Typer's own usage line and argument rows print Python types (`{VIDEO} {QUESTION...}...`,
`QUESTION... <list[str]>`); these are written here from click's public parameter attributes instead
(`metavar`, `nargs`, `required`, `default`), so a usage line reads `VIDEO [QUESTION]...`. `-h` is
`--help` everywhere (HELP_OPTIONS, given to the root app and inherited by every command).
"""

from __future__ import annotations

from typer.core import TyperCommand

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def argument_name(param) -> str:
    """An argument as the user types it: its metavar (or NAME), `...` when it repeats."""
    name = param.metavar or param.name.upper()
    if param.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name


def usage_name(param) -> str:
    """An argument in the usage line: optional ones in brackets (an optional metavar already written
    `[X]` stays as it is)."""
    name = argument_name(param)
    if param.required or name.startswith("["):
        return name
    return f"[{name}]"


class Panels(TyperCommand):
    """Plain-text help with the options grouped under their panel, full defaults and choices shown,
    arguments and the usage line without Python types."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [usage_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx, formatter) -> None:
        panels: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = argument_record(param) if param.param_type_name == "argument" else param.get_help_record(ctx)
            if record is None:
                continue
            panel = "Arguments" if param.param_type_name == "argument" else (
                getattr(param, "rich_help_panel", None) or "Options")
            panels.setdefault(panel, []).append(record)
        for name in sorted(panels, key=lambda n: (n != "Arguments", n == "Options")):
            with formatter.section(name):
                write_rows(formatter, panels[name])


def argument_record(param) -> tuple[str, str] | None:
    """(name, help) of an argument; an optional one with a default says it."""
    if getattr(param, "hidden", False):
        return None
    text = getattr(param, "help", None) or ""
    default = param.default
    if not param.required and default not in (None, (), []) and getattr(param, "show_default", True) is not False:
        text = f"{text}  [default: {default}]"
    return argument_name(param), text


def write_rows(formatter, rows: list[tuple[str, str]], first_max: int = 30, gap: int = 2) -> None:
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
