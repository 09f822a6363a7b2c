"""Model families the tool supports, looked up by the checkpoint's `model_type`.

A new family is one adapter module plus one line here; its `random:` specs come with it."""

from __future__ import annotations

from dycoke_cli.errors import ModelError
from dycoke_cli.models.base import FamilyAdapter
from dycoke_cli.models.llava_onevision import LlavaOnevisionAdapter
from dycoke_cli.models.qwen2_5_vl import Qwen25VLAdapter
from dycoke_cli.models.qwen3_vl import Qwen3VLAdapter
from dycoke_cli.models.smolvlm import SmolVLMAdapter

FAMILIES: list[type[FamilyAdapter]] = [LlavaOnevisionAdapter, Qwen25VLAdapter, Qwen3VLAdapter, SmolVLMAdapter]


def adapter_for(model_type: str, spec: str) -> type[FamilyAdapter]:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(f"{f.family} ({'/'.join(f.model_types)})" for f in FAMILIES)
    raise ModelError(f"model '{spec}' is a '{model_type}' checkpoint, which is not supported; supported: {supported}")
