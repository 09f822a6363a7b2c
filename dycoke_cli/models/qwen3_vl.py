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

from dycoke_cli.models import random_specs as rs
from dycoke_cli.models.base import VideoFeatures
from dycoke_cli.models.qwen_common import QwenAdapter, check_aspect

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

    @classmethod
    def random_specs(cls) -> list[rs.RandomSpec]:
        return RANDOM_SPECS

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

    def video_meta(self, groups, frames) -> dict:
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


# ------------------------------------------------------------------ random-weight specs

# Qwen/Qwen3-VL-{2B,8B}-Instruct chat template (no default system prompt; the tools branch kept).
CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# The checkpoints' video_preprocessor_config.json: a pixel budget over the clip, mean/std 0.5, bicubic,
# 2 fps sampling of 4..768 frames.
VIDEO_PREPROCESSOR = {
    "size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
    "rescale_factor": 1 / 255, "do_rescale": True, "do_normalize": True, "do_resize": True, "do_convert_rgb": True,
    "fps": 2, "min_frames": 4, "max_frames": 768, "do_sample_frames": True,
    "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor",
}


def build_random(spec: rs.RandomSpec, folder) -> None:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from dycoke_cli.models.qwen_common import write_random_checkpoint

    write_random_checkpoint(spec, folder, Qwen3VLConfig, Qwen3VLForConditionalGeneration, CHAT_TEMPLATE,
                            "video_preprocessor_config.json", VIDEO_PREPROCESSOR)


_VISION = dict(patch_size=16, temporal_patch_size=2, spatial_merge_size=2, hidden_act="gelu_pytorch_tanh",
               in_channels=3, num_position_embeddings=2304, num_heads=16)
_TEXT = dict(head_dim=128, max_position_embeddings=262144, rms_norm_eps=1e-6, hidden_act="silu",
             rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                              "mrope_interleaved": True})

RANDOM_SPECS = [
    # Deepstack from vision layers 0-2 into text layers 0-2; 4 text layers so FastV (from layer 3) and
    # DyCoke's DP (layer 3) have a layer left to prune.
    rs.RandomSpec(
        name="tiny-qwen3-vl", build=build_random, tiny=True, dtype="float32", tie_word_embeddings=True,
        vision=dict(_VISION, depth=3, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64,
                    num_position_embeddings=64, deepstack_visual_indexes=[0, 1, 2]),
        text=dict(_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32,
                  rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5],
                                   "mrope_interleaved": True}),
    ),
    # Qwen/Qwen3-VL-2B-Instruct
    rs.RandomSpec(
        name="qwen3-vl-2b", build=build_random, tie_word_embeddings=True,
        vision=dict(_VISION, depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048,
                    deepstack_visual_indexes=[5, 11, 17]),
        text=dict(_TEXT, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, vocab_size=151936),
    ),
    # Qwen/Qwen3-VL-8B-Instruct
    rs.RandomSpec(
        name="qwen3-vl-8b", build=build_random, tie_word_embeddings=False,
        vision=dict(_VISION, depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096,
                    deepstack_visual_indexes=[8, 16, 24]),
        text=dict(_TEXT, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=151936),
    ),
]
