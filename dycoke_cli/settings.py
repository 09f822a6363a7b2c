"""Generation settings as plain, validated values, shared by every command.

Kept free of torch so the CLI can build and check them before anything heavy is imported. The
compression settings live with the methods that declare them (compress/spec.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
