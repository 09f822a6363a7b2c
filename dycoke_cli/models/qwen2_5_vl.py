"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`).

Video path: frames resized to multiples of 28 (patch 14 x merge 2) within the checkpoint's
min/max pixels per frame, in temporal groups of 2; the windowed ViT and the 2x2 merger give
(h/28)(w/28) tokens per group. The prompt keeps the template's `<|vision_start|>...<|vision_end|>`
and expands its one `<|video_pad|>` into every group's tokens back to back: no text between groups.
M-RoPE ids: time = start + int(group * tokens_per_second * seconds_per_group), row and column =
start + index; transformers 5.24 starts the text after the video at start + max(rows, cols) (see
huggingface/transformers#45381); we take whatever its get_rope_index gives the unpruned prompt.
"""

from __future__ import annotations

import math

import torch

from dycoke_cli.models.base import VideoFeatures
from dycoke_cli.models.qwen_common import QwenAdapter, TowerInputs, check_aspect, seconds_between


class Qwen25VLAdapter(QwenAdapter):
    family = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)

    def __init__(self, config, tokenizer, folder, random_weights):
        super().__init__(config, tokenizer, folder, random_weights)
        self.max_video_tokens = int(self.settings.get("max_video_tokens", 128000))

    @staticmethod
    def model_class():
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def resized(self, frames: int, height: int, width: int) -> tuple[int, int]:
        """Qwen2VLVideoProcessor.resize: a per-frame budget of max_pixels, which the reference cap
        lowers to an even share of 90% of max_video_tokens' pixels (times 2 frames per group) for long
        clips, never below 1.05 x min_pixels."""
        factor = self.patch * self.merge
        max_pixels = self.max_pixels
        if self.cap_pixels:
            total = int(self.max_video_tokens * factor * factor * 0.9)
            max_pixels = max(min(max_pixels, total * self.group // frames), int(self.min_pixels * 1.05))
        return smart_resize(height, width, factor, self.min_pixels, max_pixels)

    def video_meta(self, clip) -> dict:
        # Seconds a group spans (the processor's temporal_patch_size / sampled fps): M-RoPE time ids.
        return {"second_per_grid_ts": self.group * seconds_between(list(clip.timestamps), clip.duration)}

    def rope_inputs(self, features: VideoFeatures) -> dict:
        return {"second_per_grid_ts": torch.tensor([features.meta["second_per_grid_ts"]])}

    def video_text(self, features: VideoFeatures) -> str:
        frames, per_frame = features.tokens.shape[:2]
        return self.video_pad * (frames * per_frame)

    def full_attention_layers(self) -> set[int]:
        return set(self.config.vision_config.fullatt_block_indexes)

    def tower_inputs(self, visual, values: torch.Tensor, grid: torch.Tensor) -> TowerInputs:
        """As the tower's forward begins: patches embedded and reordered window by window (each window a
        run of whole merge groups), rotary positions of the raster grid reordered alike."""
        from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

        unit = self.merge * self.merge
        window_index, cu_windows = get_vision_window_index(grid, spatial_merge_size=self.merge,
                                                           window_size=visual.window_size, patch_size=self.patch)
        hidden = visual.patch_embed(values)  # (G*4, D) raster-block order
        seq = hidden.shape[0]
        hidden = visual.permute_input_for_window_attn(hidden, window_index, seq_len=seq)
        rotary = visual.rotary_pos_emb(hidden, get_vision_position_ids(grid, self.merge))
        rotary = tuple(visual.permute_input_for_window_attn(r, window_index, seq_len=seq) for r in rotary)
        order = window_index.to(hidden.device)  # (G,) raster merge group at each tower position
        ends = (cu_windows[1:] // unit).to(hidden.device)  # each window's end, in merge groups
        windows = torch.searchsorted(ends, torch.arange(len(order), device=hidden.device), right=True)
        per_frame = int(grid[0, 1] * grid[0, 2]) // unit
        return TowerInputs(hidden=hidden, rotary=rotary, order=order, frames=order // per_frame, windows=windows)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' qwen2_vl smart_resize: each side rounded to a multiple of `factor`, then scaled
    (keeping the aspect ratio) into [min_pixels, max_pixels]."""
    check_aspect(height, width)
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w
