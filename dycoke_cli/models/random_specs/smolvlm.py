"""Random-weight SmolVLM2 checkpoints: SigLIP + a Llama text model, SmolVLM2's processor settings."""

from __future__ import annotations

from dycoke_cli.models.random_specs.common import RandomSpec, build_tokenizer, save_model, token_ids, write_json

FAMILY = "SmolVLM2"

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'] is string %}"
    "{{': ' + message['content']}}{% else %}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}"
    "{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<global-img>",
                  "<image>", "<end_of_utterance>"]

# HuggingFaceTB/SmolVLM2-500M-Video-Instruct preprocessor_config.json
PREPROCESSOR = {
    "do_convert_rgb": True, "do_image_splitting": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
    "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 1,
    "rescale_factor": 1 / 255, "max_image_size": {"longest_edge": 512}, "size": {"longest_edge": 2048},
    "video_sampling": {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": 512}},
    "image_processor_type": "SmolVLMImageProcessor", "processor_class": "SmolVLMProcessor",
}


def build(spec: RandomSpec, folder) -> None:
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    tokenizer = build_tokenizer(
        SPECIAL_TOKENS, spec.bpe_vocab, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
        additional_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                              "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"})
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    ids = token_ids(tokenizer, SPECIAL_TOKENS)
    text = dict(spec.text, model_type="llama")
    text.setdefault("vocab_size", len(tokenizer))
    text.update(bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|im_end|>"])
    config = SmolVLMConfig(vision_config=dict(spec.vision), text_config=text, image_token_id=ids["<image>"],
                           tie_word_embeddings=spec.tie_word_embeddings, **spec.config)
    save_model(SmolVLMForConditionalGeneration, config, spec, folder, eos=ids["<end_of_utterance>"],
                  pad=ids["<|im_end|>"])
    settings = {**PREPROCESSOR, **spec.processor}
    write_json(folder, "preprocessor_config.json", settings)
    side = settings["max_image_size"]["longest_edge"]
    seq = (side // spec.vision["patch_size"] // spec.config["scale_factor"]) ** 2
    write_json(folder, "processor_config.json", {"image_seq_len": seq, "processor_class": "SmolVLMProcessor"})


_TEXT = dict(rms_norm_eps=1e-5, max_position_embeddings=8192,
             rope_parameters={"rope_type": "default", "rope_theta": 100000.0})

SPECS = [
    # 128 px frames, 16 px patches, shuffle 2 -> 4 x 4 = 16 tokens per frame; 4 text laye
    RandomSpec(
        name="tiny-smolvlm2", build=build, tiny=True, dtype="float32", tie_word_embeddings=False,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    image_size=128, patch_size=16),
        text=dict(_TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32),
        config={"scale_factor": 2},
        processor={"max_image_size": {"longest_edge": 128}, "size": {"longest_edge": 128},
                   "video_sampling": {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": 128}}},
    ),
    # HuggingFaceTB/SmolVLM2-500M-Video-Instruct: SigLIP-B/16 at 512 px + SmolLM2-360M.
    RandomSpec(
        name="smolvlm2-500m", build=build, tie_word_embeddings=False,
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    image_size=512, patch_size=16),
        text=dict(_TEXT, hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                  num_key_value_heads=5, head_dim=64, vocab_size=49280),
        config={"scale_factor": 4},
    ),
]
