"""Qwen3-VL (`Qwen3VLForConditionalGeneration`).

Video path: the clip's frames share one pixel budget (min/max pixels over the whole clip), each is
resized to multiples of 32 (patch 16 x merge 2) and cut into temporal groups of 2; the ViT and the
2x2 merger give (h/32)(w/32) tokens per group. Three intermediate ViT layers feed three more
"deepstack" token sets through their own mergers; the language model adds level i to the hidden
states of the visual positions after its decoder layer i (i = 0, 1, 2). Deepstack levels are
per-token features: every method's keep mask applies to each of them alike (VideoFeatures.extras),
and FastV may shrink the sequence only from layer 3 on (min_prune_layer).

Prompt: each group gets its own `<t seconds><|vision_start|>` + tokens + `<|vision_end|>`, t the
mean time of the group's two frames. This expansion replaces the template's whole
`<|vision_start|><|video_pad|><|vision_end|>`, as the reference processor (Qwen's, and transformers
up to 4.57) does; transformers 5.x's generic replacement keeps the outer pair as well (two more
tokens around the video) - a format the model was not trained on. Timestamp text is never pruned.
M-RoPE ids: every group is its own run (t = row = column start = its position), so a group's ids do
not depend on the others and the text between groups advances them.
"""

from __future__ import annotations

import math

import torch

from dycoke_cli.models.base import VideoFeatures
from dycoke_cli.models.qwen_common import QwenAdapter, TowerInputs, check_aspect, group_times

DEEPSTACK = "deepstack."  # extras names: deepstack.0, deepstack.1, ...


class Qwen3VLAdapter(QwenAdapter):
    family = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    default_mean = [0.5, 0.5, 0.5]
    default_std = [0.5, 0.5, 0.5]
    default_min_pixels = 128 * 32 * 32
    default_max_pixels = 768 * 32 * 32

    def __init__(self, config, tokenizer, folder, random_weights):
        super().__init__(config, tokenizer, folder, random_weights)
        self.levels = len(config.vision_config.deepstack_visual_indexes)
        self.min_prune_layer = self.levels  # deepstack writes into the visual positions of layers 0..levels-1
        self.max_video_tokens = int(self.settings.get("max_video_tokens", 768))  # per-frame ceiling of the cap

    @staticmethod
    def model_class():
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration

    def resized(self, frames: int, height: int, width: int) -> tuple[int, int]:
        """Qwen3VLVideoProcessor.resize: max_pixels bounds the whole clip; the reference cap makes a
        frame's share at most max_video_tokens tokens' worth, never below 1.05 x min_pixels. A single
        frame counts as the group of two it is padded to (the processor refuses one frame)."""
        frames = max(frames, self.group)
        factor = self.patch * self.merge
        max_pixels = self.max_pixels
        if self.cap_pixels:
            per_frame = max(min(self.max_video_tokens * factor * factor, max_pixels // frames),
                            int(self.min_pixels * 1.05))
            max_pixels = per_frame * frames
        return smart_resize(frames, height, width, self.group, factor, self.min_pixels, max_pixels)

    def video_meta(self, clip) -> dict:
        _, groups = group_times(clip.timestamps, self.group)
        return {"timestamps": tuple((g[0] + g[-1]) / 2 for g in groups)}  # what each group's label says

    def video_text(self, features: VideoFeatures) -> str:
        per_frame = features.tokens.shape[1]
        block = "<|vision_start|>" + self.video_pad * per_frame + "<|vision_end|>"
        return "".join(f"<{t:.1f} seconds>" + block for t in features.meta["timestamps"])

    def placeholder(self, text: str) -> str:
        wrapped = "<|vision_start|>" + self.video_pad + "<|vision_end|>"
        return wrapped if wrapped in text else self.video_pad

    def extra_features(self, output, frames: int, per_frame: int) -> dict:
        # deepstack_features: one entry per level, each a tuple per video of (F*T, D)
        return {f"{DEEPSTACK}{i}": level[0].view(frames, per_frame, -1)
                for i, level in enumerate(output.deepstack_features)}

    def deepstack_layers(self) -> list[int]:
        return list(self.config.vision_config.deepstack_visual_indexes)

    def tower_inputs(self, visual, values: torch.Tensor, grid: torch.Tensor) -> TowerInputs:
        """As the tower's forward begins: patches embedded plus the learned position table resampled to
        the grid, rotary positions; raster-block order (merge groups of 4 consecutive rows), no windows."""
        from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

        indices, weights = get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=self.merge)
        hidden = visual.patch_embed(values)  # (G*4, D)
        hidden = hidden + (visual.pos_embed(indices) * weights[:, :, None]).sum(1).to(hidden.dtype)
        rotary = visual.rotary_pos_emb(hidden, get_vision_position_ids(grid, self.merge))
        unit = self.merge * self.merge
        order = torch.arange(hidden.shape[0] // unit, device=hidden.device)
        per_frame = int(grid[0, 1] * grid[0, 2]) // unit
        return TowerInputs(hidden=hidden, rotary=rotary, order=order, frames=order // per_frame)

    def encoder_output(self, tokens, extras):
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        levels = [(extras[f"{DEEPSTACK}{i}"],) for i in range(self.levels)]  # the same kept rows on every level
        return BaseModelOutputWithDeepstackFeatures(pooler_output=(tokens,), deepstack_features=levels)


def smart_resize(frames: int, height: int, width: int, temporal: int, factor: int, min_pixels: int,
                 max_pixels: int) -> tuple[int, int]:
    """transformers' qwen3_vl video smart_resize: sides below `factor` scaled up, each side rounded to a
    multiple of `factor`, then scaled so that frames x h x w lies in [min_pixels, max_pixels]."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    check_aspect(height, width)
    h, w = round(height / factor) * factor, round(width / factor) * factor
    t = round(frames / temporal) * temporal
    if t * h * w > max_pixels:
        beta = math.sqrt(frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w
