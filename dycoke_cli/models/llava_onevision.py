"""LLaVA-OneVision (and the LLaVA-Video checkpoints that share its class).

Video path: SigLIP on each 384 px frame (27x27 patches) -> projector -> 2x2 bilinear pooling to
14x14 = 196 tokens per frame -> one learned `image_newline` after the last frame. The prompt holds
one `<video>` token, which this adapter expands to as many placeholders as there are video tokens
after compression; `forward` then scatters the precomputed tokens into those slots.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dycoke_cli.errors import ModelError
from dycoke_cli.models.base import FamilyAdapter, Prompt, VideoFeatures, read_preprocessor

_RESAMPLE = {2: "bilinear", 3: "bicubic", "bilinear": "bilinear", "bicubic": "bicubic"}


class LlavaOnevisionAdapter(FamilyAdapter):
    family = "LLaVA-OneVision"
    model_types = ("llava_onevision",)
    quant_skip_modules = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]

    def __init__(self, model, tokenizer, folder, random_weights):
        super().__init__(model, tokenizer, folder, random_weights)
        settings = read_preprocessor(folder)
        side = model.config.vision_config.image_size
        size = settings.get("size") or {}
        self.size = (size.get("height", side), size.get("width", side))
        self.resample = _RESAMPLE.get(settings.get("resample", 3), "bicubic")
        self.scale = settings.get("rescale_factor", 1 / 255) if settings.get("do_rescale", True) else 1.0
        normalize = settings.get("do_normalize", True)
        self.mean = settings.get("image_mean", [0.5] * 3) if normalize else [0.0] * 3
        self.std = settings.get("image_std", [0.5] * 3) if normalize else [1.0] * 3
        self.video_token = model.config.video_token_index
        if self.chat_template is None:
            raise ModelError(f"checkpoint in '{folder}' has no chat template; it cannot be prompted")

    @staticmethod
    def model_class():
        from transformers import LlavaOnevisionForConditionalGeneration

        return LlavaOnevisionForConditionalGeneration

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        # Resizing the uint8 tensor (not a float one) is what matches the reference processor.
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (F, 3, H, W) uint8
        pixels = F.interpolate(pixels, size=self.size, mode=self.resample, antialias=True)
        pixels = pixels.float() * self.scale
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        pixels = (pixels - mean) / std  # (F, 3, S, S)
        return pixels.unsqueeze(0).to(self.model.device, self.model.dtype)  # (1, F, 3, S, S)

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> VideoFeatures:
        frames = pixel_values.shape[1]
        out = self.model.model.get_video_features(pixel_values_videos=pixel_values, return_dict=True)
        pooled = out.pooler_output[0]  # (F*T + 1, D): frames in raster order, then the newline
        tokens = pooled[:-1].reshape(frames, -1, pooled.shape[-1])  # (F, T, D)
        return VideoFeatures(tokens=tokens, newline=pooled[-1:])  # newline: (1, D)

    def prompt(self, turns, video_tokens):
        messages = []
        for i, (question, answer) in enumerate(turns):
            content = [{"type": "text", "text": question}]
            if i == 0:
                content.insert(0, {"type": "video"})
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if ids.count(self.video_token) != 1:
            raise ModelError("the chat template did not place exactly one video token in the prompt")
        at = ids.index(self.video_token)
        ids = ids[:at] + [self.video_token] * video_tokens + ids[at + 1:]
        return Prompt(ids=ids, video_span=(at, at + video_tokens))

    def generate_inputs(self, video_tokens: torch.Tensor) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooled = video_tokens.unsqueeze(0)  # (1, N, D)
        return {"mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=pooled)}}
