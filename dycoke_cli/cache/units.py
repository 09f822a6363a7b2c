"""Sizes (`--cache-size 4GiB`) and ages (`--older-than 7d`) as people write them, read strictly:
anything else is one line naming the flag and an example, exit code 2."""

from __future__ import annotations

import re

from dycoke_cli.errors import BadInputError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, flag: str = "--cache-size") -> int:
    """Bytes in `text`: a number with an optional unit, B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/
    GiB/TiB (powers of 1024); a bare K/M/G/T means the binary unit, as in `du` and `ls -h`."""
    match = _SIZE.match(text or "")
    if not match:
        raise BadInputError(f"{flag} {text!r}: expected a size such as 4GiB, 500MB or 0")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    letter = unit[:1] if unit[:1] in "kmgt" and unit else ""
    base = 1000 if unit.endswith("b") and not unit.endswith("ib") and letter else 1024
    return int(number * base ** _POWERS[letter])


def parse_age(text: str, flag: str = "--older-than") -> float:
    """Seconds in `text`: a number and one of s, m, h, d, w (e.g. 90s, 12h, 7d, 2w)."""
    match = _AGE.match(text or "")
    if not match:
        raise BadInputError(f"{flag} {text!r}: expected an age such as 12h, 7d or 2w (s, m, h, d, w)")
    return float(match.group(1)) * AGE_SECONDS[match.group(2).lower()]
