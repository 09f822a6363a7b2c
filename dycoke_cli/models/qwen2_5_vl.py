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

from dycoke_cli.models import random_specs as rs
from dycoke_cli.models.base import VideoFeatures
from dycoke_cli.models.qwen_common import QwenAdapter, check_aspect, seconds_between


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

    @classmethod
    def random_specs(cls) -> list[rs.RandomSpec]:
        return RANDOM_SPECS

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

    def video_meta(self, groups, frames) -> dict:
        # Seconds a group spans (the processor's temporal_patch_size / sampled fps): M-RoPE time ids.
        return {"second_per_grid_ts": self.group * seconds_between(list(frames.timestamps), frames.duration)}

    def rope_inputs(self, features: VideoFeatures) -> dict:
        return {"second_per_grid_ts": torch.tensor([features.meta["second_per_grid_ts"]])}

    def video_text(self, features: VideoFeatures) -> str:
        frames, per_frame = features.tokens.shape[:2]
        return self.video_pad * (frames * per_frame)


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


# ------------------------------------------------------------------ random-weight specs

# Qwen/Qwen2.5-VL-{3B,7B}-Instruct chat_template.json (its default system prompt included).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The checkpoints' preprocessor_config.json (they have no video_preprocessor_config.json, so the video
# processor reads this one): min/max pixels per frame, CLIP mean/std, bicubic.
PREPROCESSOR = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "rescale_factor": 1 / 255, "do_rescale": True, "do_normalize": True, "do_resize": True,
    "do_convert_rgb": True, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}


def build_random(spec: rs.RandomSpec, folder) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from dycoke_cli.models.qwen_common import write_random_checkpoint

    write_random_checkpoint(spec, folder, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, CHAT_TEMPLATE,
                            "preprocessor_config.json", PREPROCESSOR)


_VISION_3B = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                  temporal_patch_size=2, spatial_merge_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                  tokens_per_second=2, hidden_act="silu", in_chans=3)
_TEXT = dict(max_position_embeddings=128000, rms_norm_eps=1e-6, hidden_act="silu",
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})

RANDOM_SPECS = [
    # Two layers a side, width 64; real patch/window/merge structure and the real processor settings.
    rs.RandomSpec(
        name="tiny-qwen2.5-vl", build=build_random, tiny=True, dtype="float32", tie_word_embeddings=False,
        vision=dict(_VISION_3B, depth=2, hidden_size=64, intermediate_size=128, num_heads=2,
                    fullatt_block_indexes=[1], out_hidden_size=64),
        text=dict(_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                  num_key_value_heads=1,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
    ),
    # Qwen/Qwen2.5-VL-3B-Instruct
    rs.RandomSpec(
        name="qwen2.5-vl-3b", build=build_random, tie_word_embeddings=True,
        vision=dict(_VISION_3B, out_hidden_size=2048),
        text=dict(_TEXT, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936),
    ),
    # Qwen/Qwen2.5-VL-7B-Instruct
    rs.RandomSpec(
        name="qwen2.5-vl-7b", build=build_random, tie_word_embeddings=False,
        vision=dict(_VISION_3B, out_hidden_size=3584),
        text=dict(_TEXT, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064),
    ),
]
