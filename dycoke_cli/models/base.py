"""The interface every model family implements, so the engine never branches on a model's type.

A family adapter knows three things the engine must not: how frames become pixel tensors (from the
checkpoint's own preprocessor settings, in torch, without torchvision), how the vision tower's output
splits into per-frame tokens, and how the chat template places the video in the prompt.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class Prompt:
    ids: list[int]  # token ids with the video placeholder expanded to the kept token count
    video_span: tuple[int, int]  # [start, end) of the video placeholders in ids (newline included)


@dataclass
class VideoFeatures:
    tokens: torch.Tensor  # (F, T, D) per-frame tokens in raster order, as the LM consumes them
    newline: torch.Tensor | None  # (1, D) appended after the last frame, or None for families without one


class FamilyAdapter(ABC):
    family: ClassVar[str]  # shown to users, e.g. "LLaVA-OneVision"
    model_types: ClassVar[tuple[str, ...]]  # config.json model_type values this adapter serves
    # Modules kept in 16 bits under bitsandbytes: full prefixes (a bare name matches nothing).
    quant_skip_modules: ClassVar[list[str]]

    def __init__(self, model, tokenizer, folder: Path, random_weights: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.folder = folder
        self.random_weights = random_weights
        self.chat_template = find_chat_template(folder, tokenizer)

    @staticmethod
    @abstractmethod
    def model_class():
        """The transformers class to load this family with."""

    @abstractmethod
    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(F, H, W, 3) uint8 RGB -> (1, F, 3, S, S) pixel tensor on the model's device and dtype."""

    @abstractmethod
    def encode(self, pixel_values: torch.Tensor) -> VideoFeatures:
        """Run the vision tower and projector once for the whole clip."""

    @abstractmethod
    def prompt(self, turns: list[tuple[str, str | None]], video_tokens: int) -> Prompt:
        """Render a conversation (question, answer-or-None per turn; the video in the first turn)."""

    @abstractmethod
    def generate_inputs(self, video_tokens: torch.Tensor) -> dict:
        """Keyword arguments that hand precomputed video tokens (N, D) to `generate`/`forward`."""

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text. Random-weight models draw ids from a vocabulary larger than their small
        tokenizer, so their ids are folded into it: the text is meaningless either way."""
        if self.random_weights:
            ids = [i % len(self.tokenizer) for i in ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def find_chat_template(folder: Path, tokenizer) -> str:
    """The checkpoint's multimodal chat template: the processor's file if present, else the tokenizer's."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            template = json.loads(path.read_text()).get("chat_template")
            if template:
                return template
    return tokenizer.chat_template


def read_preprocessor(folder: Path) -> dict:
    """Video preprocessing settings, preferring the video processor's file over the image one's."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            return json.loads(path.read_text())
    return {}
