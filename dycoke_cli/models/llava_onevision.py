"""LLaVA-OneVision (and the LLaVA-Video checkpoints that share its class).

Video path: SigLIP on each 384 px frame (27x27 patches) -> projector -> 2x2 bilinear pooling to
14x14 = 196 tokens per frame -> one learned `image_newline` after the last frame. The prompt holds
one `<video>` token, which this adapter expands to one placeholder per video token; `forward` then
scatters the precomputed tokens into those slots in order. Positions are 1-D: after pruning the
kept tokens are contiguous, as in DyCoke's released code.
"""

from __future__ import annotations

import math

import torch

from dycoke_cli.errors import ModelError
from dycoke_cli.models import random_specs as rs
from dycoke_cli.models.base import (FamilyAdapter, Pixels, Prompt, PrunedPrompt, VideoBlock, VideoFeatures,
                                    conversation, read_preprocessor, resize_normalize)

_RESAMPLE = {2: "bilinear", 3: "bicubic", "bilinear": "bilinear", "bicubic": "bicubic"}


class LlavaOnevisionAdapter(FamilyAdapter):
    family = "LLaVA-OneVision"
    model_types = ("llava_onevision",)
    quant_skip_modules = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
    trailing_tokens = 1  # image_newline

    def __init__(self, config, tokenizer, folder, random_weights):
        super().__init__(config, tokenizer, folder, random_weights)
        settings = read_preprocessor(folder)
        side = config.vision_config.image_size
        size = settings.get("size") or {}
        self.size = (size.get("height", side), size.get("width", side))
        self.resample = _RESAMPLE.get(settings.get("resample", 3), "bicubic")
        self.scale = settings.get("rescale_factor", 1 / 255) if settings.get("do_rescale", True) else 1.0
        normalize = settings.get("do_normalize", True)
        self.mean = settings.get("image_mean", [0.5] * 3) if normalize else [0.0] * 3
        self.std = settings.get("image_std", [0.5] * 3) if normalize else [1.0] * 3
        self.video_token = config.video_token_index

    @staticmethod
    def model_class():
        from transformers import LlavaOnevisionForConditionalGeneration

        return LlavaOnevisionForConditionalGeneration

    @classmethod
    def random_specs(cls) -> list[rs.RandomSpec]:
        return RANDOM_SPECS

    def frame_tokens(self, height: int, width: int, frames: int | None = None) -> int:
        side = math.ceil(self.config.vision_config.image_size // self.config.vision_config.patch_size / 2)
        return side * side  # every frame is resized to the same square: 14 x 14 at 384 px

    def preprocess(self, frames) -> Pixels:
        pixels = resize_normalize(frames.pixels, self.size, self.mean, self.std, self.scale, self.resample)
        values = pixels.unsqueeze(0).to(self.model.device, self.model.dtype)  # (1, F, 3, S, S)
        return Pixels(values=values, times=tuple(frames.timestamps))

    @torch.no_grad()
    def encode(self, pixels: Pixels) -> VideoFeatures:
        frames = pixels.values.shape[1]
        out = self.model.model.get_video_features(pixel_values_videos=pixels.values, return_dict=True)
        pooled = out.pooler_output[0]  # (F*T + 1, D): frames in raster order, then the newline
        tokens = pooled[:-1].reshape(frames, -1, pooled.shape[-1])  # (F, T, D)
        side = math.isqrt(tokens.shape[1])
        return VideoFeatures(tokens=tokens, grid=(side, side), times=pixels.times, trailing=pooled[-1:])

    def video_block(self, features: VideoFeatures) -> VideoBlock:
        frames, per_frame = features.tokens.shape[:2]
        count = frames * per_frame + 1  # + the newline
        return VideoBlock(ids=[self.video_token] * count, slots=torch.arange(frames * per_frame).view(frames, -1))

    def prompt(self, turns, block: VideoBlock, features: VideoFeatures, system: str | None = None) -> Prompt:
        ids = self.render(conversation(turns, system, {"type": "video"}))
        if ids.count(self.video_token) != 1:
            raise ModelError("the chat template did not place exactly one video token in the prompt")
        at = ids.index(self.video_token)
        return Prompt(ids=ids[:at] + block.ids + ids[at + 1:], video_start=at, block=block)

    def generate_inputs(self, tokens, extras, features: VideoFeatures, prompt: PrunedPrompt) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooled = torch.cat([tokens, features.trailing]).unsqueeze(0)  # (1, N + 1, D)
        return {"mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=pooled)}}

    def text_layers(self) -> list:
        return list(self.model.model.language_model.layers)


# ------------------------------------------------------------------ random-weight specs

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# The chat template shape of the LLaVA-OneVision checkpoints: media before the text of a turn, so a
# video's tokens form a prefix that every question about it shares.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'video' %}{{ '<video>' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ '\\n' + part['text'] }}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_random(spec: rs.RandomSpec, folder) -> None:
    """Write a random LLaVA-OneVision checkpoint: SigLIP + Qwen2 with the spec's dimensions."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    tokenizer = rs.build_tokenizer(SPECIAL_TOKENS, spec.bpe_vocab, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<image>", "<video>"])
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    ids = rs.token_ids(tokenizer, SPECIAL_TOKENS)
    text = dict(spec.text)
    text.setdefault("vocab_size", len(tokenizer))
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = LlavaOnevisionConfig(
        vision_config=dict(spec.vision, model_type="siglip_vision_model"),
        text_config=dict(text, model_type="qwen2"),
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        tie_word_embeddings=spec.tie_word_embeddings,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    rs.save_model(LlavaOnevisionForConditionalGeneration, config, spec, folder, eos=ids["<|im_end|>"],
                  pad=ids["<|endoftext|>"])
    side = spec.vision["image_size"]
    rs.write_json(folder, "video_preprocessor_config.json", {  # the checkpoints' video settings
        "size": {"height": side, "width": side}, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    })


_SIGLIP_SO400M = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
    image_size=384, patch_size=14, vision_use_head=False,
)

RANDOM_SPECS = [
    # A few hundred thousand parameters, 384 px so a frame gives the real 27x27 -> 14x14 = 196 tokens.
    # Widths are multiples of 64 so bitsandbytes' 4-bit CPU kernels accept every quantized linear.
    rs.RandomSpec(
        name="tiny", build=build_random, tiny=True, dtype="float32", tie_word_embeddings=False,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=384, patch_size=14, vision_use_head=False),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0),
    ),
    # llava-hf/llava-onevision-qwen2-0.5b-ov-hf: SigLIP-so400m + Qwen2-0.5B.
    rs.RandomSpec(
        name="llava-onevision-0.5b", build=build_random, tie_word_embeddings=True, vision=_SIGLIP_SO400M,
        text=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
                  vocab_size=152000, tie_word_embeddings=True),
    ),
    # llava-hf/llava-onevision-qwen2-7b-ov-hf: SigLIP-so400m + Qwen2-7B.
    rs.RandomSpec(
        name="llava-onevision-7b", build=build_random, tie_word_embeddings=False, vision=_SIGLIP_SO400M,
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0,
                  vocab_size=152128),
    ),
]
