"""Random-weight Qwen2.5-VL and Qwen3-VL checkpoints: Qwen's special tokens, each family's chat template
and preprocessing settings file, the real configurations at real or tiny sizes."""

from __future__ import annotations

from dycoke_cli.models.random_specs.common import RandomSpec, build_tokenizer, save_model, token_ids, write_json

QWEN2_5_VL = "Qwen2.5-VL"
QWEN3_VL = "Qwen3-VL"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


def write_random_checkpoint(spec, folder, config_class, model_class, chat_template: str, preprocessor_name: str,
                            preprocessor: dict) -> None:
    """A random Qwen-VL checkpoint folder: tokenizer with Qwen's special tokens, the family's chat template,
    config, weights and the preprocessing settings file the family's processor reads."""
    tokenizer = build_tokenizer(SPECIAL_TOKENS, spec.bpe_vocab, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                additional_special_tokens=SPECIAL_TOKENS[1:])
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(chat_template)
    ids = token_ids(tokenizer, SPECIAL_TOKENS)
    text = dict(spec.text)
    text.setdefault("vocab_size", len(tokenizer))
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=spec.tie_word_embeddings)
    config = config_class(
        text_config=text, vision_config=dict(spec.vision), tie_word_embeddings=spec.tie_word_embeddings,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **spec.config,
    )
    save_model(model_class, config, spec, folder, eos=ids["<|im_end|>"], pad=ids["<|endoftext|>"])
    write_json(folder, preprocessor_name, {**preprocessor, **spec.processor})


# ------------------------------------------------------------------ Qwen2.5-VL

# Qwen/Qwen2.5-VL-{3B,7B}-Instruct chat_template.json (its default system prompt included).
CHAT_TEMPLATE_2_5 = (
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
PREPROCESSOR_2_5 = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "rescale_factor": 1 / 255, "do_rescale": True, "do_normalize": True, "do_resize": True,
    "do_convert_rgb": True, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}


def build_2_5(spec: RandomSpec, folder) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    write_random_checkpoint(spec, folder, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, CHAT_TEMPLATE_2_5,
                            "preprocessor_config.json", PREPROCESSOR_2_5)


_VISION_2_5_3B = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                      temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu", in_chans=3)
_TEXT_2_5 = dict(max_position_embeddings=128000, rms_norm_eps=1e-6, hidden_act="silu",
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})

SPECS_2_5 = [
    # Two layers a side, width 64; real patch/window/merge structure and the real processor settings.
    RandomSpec(
        name="tiny-qwen2.5-vl", build=build_2_5, tiny=True, dtype="float32", tie_word_embeddings=False,
        vision=dict(_VISION_2_5_3B, depth=2, hidden_size=64, intermediate_size=128, num_heads=2,
                    fullatt_block_indexes=[1], out_hidden_size=64),
        text=dict(_TEXT_2_5, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                  num_key_value_heads=1,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
    ),
    # Qwen/Qwen2.5-VL-3B-Instruct
    RandomSpec(
        name="qwen2.5-vl-3b", build=build_2_5, tie_word_embeddings=True,
        vision=dict(_VISION_2_5_3B, out_hidden_size=2048),
        text=dict(_TEXT_2_5, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936),
    ),
    # Qwen/Qwen2.5-VL-7B-Instruct
    RandomSpec(
        name="qwen2.5-vl-7b", build=build_2_5, tie_word_embeddings=False,
        vision=dict(_VISION_2_5_3B, out_hidden_size=3584),
        text=dict(_TEXT_2_5, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064),
    ),
]


# ------------------------------------------------------------------ Qwen3-VL

# Qwen/Qwen3-VL-{2B,8B}-Instruct chat template (no default system prompt; the tools branch kept).
CHAT_TEMPLATE_3 = """{%- if tools %}
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
VIDEO_PREPROCESSOR_3 = {
    "size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
    "rescale_factor": 1 / 255, "do_rescale": True, "do_normalize": True, "do_resize": True, "do_convert_rgb": True,
    "fps": 2, "min_frames": 4, "max_frames": 768, "do_sample_frames": True,
    "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor",
}


def build_3(spec: RandomSpec, folder) -> None:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    write_random_checkpoint(spec, folder, Qwen3VLConfig, Qwen3VLForConditionalGeneration, CHAT_TEMPLATE_3,
                            "video_preprocessor_config.json", VIDEO_PREPROCESSOR_3)


_VISION_3 = dict(patch_size=16, temporal_patch_size=2, spatial_merge_size=2, hidden_act="gelu_pytorch_tanh",
                 in_channels=3, num_position_embeddings=2304, num_heads=16)
_TEXT_3 = dict(head_dim=128, max_position_embeddings=262144, rms_norm_eps=1e-6, hidden_act="silu",
               rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                "mrope_interleaved": True})

SPECS_3 = [
    # Deepstack from vision layers 0-2 into text layers 0-2; 4 text layers so FastV (from layer 3) and
    # DyCoke's DP (layer 3) have a layer left to prune.
    RandomSpec(
        name="tiny-qwen3-vl", build=build_3, tiny=True, dtype="float32", tie_word_embeddings=True,
        vision=dict(_VISION_3, depth=3, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64,
                    num_position_embeddings=64, deepstack_visual_indexes=[0, 1, 2]),
        text=dict(_TEXT_3, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32,
                  rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5],
                                   "mrope_interleaved": True}),
    ),
    # Qwen/Qwen3-VL-2B-Instruct
    RandomSpec(
        name="qwen3-vl-2b", build=build_3, tie_word_embeddings=True,
        vision=dict(_VISION_3, depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048,
                    deepstack_visual_indexes=[5, 11, 17]),
        text=dict(_TEXT_3, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, vocab_size=151936),
    ),
    # Qwen/Qwen3-VL-8B-Instruct
    RandomSpec(
        name="qwen3-vl-8b", build=build_3, tie_word_embeddings=False,
        vision=dict(_VISION_3, depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096,
                    deepstack_visual_indexes=[8, 16, 24]),
        text=dict(_TEXT_3, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=151936),
    ),
]
