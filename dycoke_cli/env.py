"""On/off environment variables read the way click reads a boolean option's variable, so
`DYCOKE_DEBUG=false` means off wherever it is read (a plain "is it set" test would turn it on)."""

from __future__ import annotations

import os

TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})


def flag(name: str) -> bool:
    """Whether the variable `name` says on (1, true, yes, on, any case); unset, empty or anything else is off."""
    return os.environ.get(name, "").strip().lower() in TRUE
