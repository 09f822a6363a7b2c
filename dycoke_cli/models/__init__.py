"""Model families, loading (Hub id, local folder, random spec), quantization and placement.

`load_model` and `LoadedModel` are resolved lazily so that importing a light submodule (such as
`models.source` for the default model id) does not import torch.
"""

from __future__ import annotations

__all__ = ["LoadedModel", "ModelInfo", "inspect_model", "load_model"]


def __getattr__(name: str):
    if name in __all__:
        from dycoke_cli.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
