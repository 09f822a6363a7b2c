"""Shell completion of the values users type most: `--compress` (methods, then their keys and
choices, from each method's own declaration) and `--model` (built-in and random-weight specs, and the
checkpoints in huggingface-hub's cache).

Typer calls these through its public `autocompletion=` hook while the shell asks (`_DYCOKE_COMPLETE`
set); each returns (value, help) pairs for the values that start with what is typed, and imports
nothing heavy, so a TAB answers at once.
"""

from __future__ import annotations


def compress_values(incomplete: str) -> list[tuple[str, str]]:
    """METHOD, then METHOD:KEY=, then a KEY's choices; keys already given are not offered again."""
    from dycoke_cli.compress.registry import METHODS

    if ":" not in incomplete:
        return [(name, cls.summary) for name, cls in METHODS.items() if name.startswith(incomplete)]
    method, _, settings = incomplete.partition(":")
    cls = METHODS.get(method)
    if cls is None:
        return []
    given, _, current = settings.rpartition(",")
    head = f"{method}:{given}," if given else f"{method}:"
    used = {piece.split("=", 1)[0] for piece in given.split(",") if piece}
    if "=" in current:
        key, _, value = current.partition("=")
        param = next((p for p in cls.params if p.name == key), None)
        if param is None:
            return []
        return [(f"{head}{key}={choice}", param.help) for choice in param.choices if choice.startswith(value)]
    keys = [p for p in cls.params if p.name not in used and p.name.startswith(current)]
    return [(f"{head}{p.name}=", f"{p.domain()}: {p.help}") for p in keys]


def model_values(incomplete: str) -> list[tuple[str, str]]:
    """builtin: and random: specs, and the model repositories in huggingface-hub's cache."""
    from dycoke_cli.models.catalogue import names

    return [(name, what) for name, what in names() if name.startswith(incomplete)]
