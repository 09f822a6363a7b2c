"""Compression methods, by the name a user types. A new method is one module plus one line here.

Method modules import torch only inside their hooks, so this table (and `--help`) stays light.
"""

from __future__ import annotations

from dycoke_cli.compress.base import Method
from dycoke_cli.compress.dycoke import DyCoke
from dycoke_cli.compress.dynamics import Dynamics
from dycoke_cli.compress.earlytom import EarlyTom
from dycoke_cli.compress.evs import Evs
from dycoke_cli.compress.fastv import FastV
from dycoke_cli.compress.none import NoCompression
from dycoke_cli.compress.random_drop import RandomDrop
from dycoke_cli.compress.uniform import Uniform
from dycoke_cli.compress.vidcom2 import VidCom2
from dycoke_cli.errors import SettingsError

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    NoCompression,
    DyCoke,
    Evs,
    VidCom2,
    FastV,
    Uniform,
    RandomDrop,
    Dynamics,
    EarlyTom,
)}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise SettingsError(f"unknown compression method '{name}'; methods: {', '.join(METHODS)}") from None
