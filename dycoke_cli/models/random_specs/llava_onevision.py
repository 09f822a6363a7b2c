"""Random-weight LLaVA-OneVision checkpoints: SigLIP + Qwen2 at the real (or tiny) sizes."""

from __future__ import annotations

from dycoke_cli.models.random_specs.common import RandomSpec, build_tokenizer, save_model, token_ids, write_json

FAMILY = "LLaVA-OneVision"

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


def build(spec: RandomSpec, folder) -> None:
    """Write a random LLaVA-OneVision checkpoint: SigLIP + Qwen2 with the spec's dimensions."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    tokenizer = build_tokenizer(SPECIAL_TOKENS, spec.bpe_vocab, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                additional_special_tokens=["<|im_start|>", "<image>", "<video>"])
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    ids = token_ids(tokenizer, SPECIAL_TOKENS)
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
    save_model(LlavaOnevisionForConditionalGeneration, config, spec, folder, eos=ids["<|im_end|>"],
                  pad=ids["<|endoftext|>"])
    side = spec.vision["image_size"]
    write_json(folder, "video_preprocessor_config.json", {  # the checkpoints' video settings
        "size": {"height": side, "width": side}, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    })


_SIGLIP_SO400M = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
    image_size=384, patch_size=14, vision_use_head=False,
)

SPECS = [
    # A few hundred thousand parameters, 384 px so a frame gives the real 27x27 -> 14x14 = 196 tokens.
    # Widths are multiples of 64 so bitsandbytes' 4-bit CPU kernels accept every quantized linear.
    RandomSpec(
        name="tiny", build=build, tiny=True, dtype="float32", tie_word_embeddings=False,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=384, patch_size=14, vision_use_head=False),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0),
    ),
    # llava-hf/llava-onevision-qwen2-0.5b-ov-hf: SigLIP-so400m + Qwen2-0.5B.
    RandomSpec(
        name="llava-onevision-0.5b", build=build, tie_word_embeddings=True, vision=_SIGLIP_SO400M,
        text=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
                  vocab_size=152000, tie_word_embeddings=True),
    ),
    # llava-hf/llava-onevision-qwen2-7b-ov-hf: SigLIP-so400m + Qwen2-7B.
    RandomSpec(
        name="llava-onevision-7b", build=build, tie_word_embeddings=False, vision=_SIGLIP_SO400M,
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0,
                  vocab_size=152128),
    ),
]
