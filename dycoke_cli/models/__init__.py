"""Model families, loading (Hub id, local folder, random spec), quantization and placement."""

from dycoke_cli.models.loading import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
