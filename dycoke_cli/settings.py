"""Settings of a run as plain, validated values: compression and generation.

Kept free of torch so the CLI can parse and check them before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from dycoke_cli.errors import SettingsError


@dataclass(frozen=True)
class Compression:
    """DyCoke settings; `ttm_k=0` and `kv_p=0` turn each stage off."""

    ttm_k: float = 0.7
    ttm_variant: str = "clean"
    kv_p: float = 0.7
    kv_layer: int = 3
    kv_gate: str = "reuse"

    def validate(self, num_layers: int | None = None) -> "Compression":
        if not 0.0 <= self.ttm_k < 1.0:
            raise SettingsError(f"TTM pruning rate must be in [0, 1), got {self.ttm_k}")
        if not 0.0 <= self.kv_p < 1.0:
            raise SettingsError(f"KV pruning rate must be in [0, 1), got {self.kv_p}")
        if self.ttm_variant not in ("clean", "reference"):
            raise SettingsError(f"TTM variant must be clean or reference, got '{self.ttm_variant}'")
        if self.kv_gate not in ("reuse", "released"):
            raise SettingsError(f"KV gate must be reuse or released, got '{self.kv_gate}'")
        if self.kv_layer < 1 or (num_layers is not None and self.kv_layer >= num_layers):
            limit = f" and below the model's {num_layers} layers" if num_layers else ""
            raise SettingsError(f"KV layer must be at least 1{limit}, got {self.kv_layer}")
        return self


NO_COMPRESSION = Compression(ttm_k=0.0, kv_p=0.0)


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
