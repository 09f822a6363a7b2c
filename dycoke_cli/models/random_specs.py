"""Random-weight models with real configurations: `random:<name>`.

They let anyone measure real shapes and timings (or run the test suite) without a download. A spec
is materialised once into a folder (config, safetensors, tokenizer, chat template, preprocessor
settings) and then loaded by the very same `from_pretrained` path as a real checkpoint, so loading,
quantization and device placement are exercised exactly as for a Hub model. A fixed seed makes two
builds of one spec identical. Answers from these models are meaningless; the stats say so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dycoke_cli.errors import ModelError

RANDOM_PREFIX = "random:"
SEED = 20250611
FORMAT_VERSION = 1  # bump when what a spec builds changes, so stale cached folders are rebuilt

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

# A small corpus for the byte-level BPE of random models: enough merges for readable (if random) text.
_CORPUS = [
    "What happens in this video? A person walks across the room and opens the door.",
    "The camera pans left over a city street at night; cars pass and lights flicker.",
    "Describe the scene. Answer with the option's letter from the given choices directly.",
    "A dog runs after a red ball in a green park while children laugh and play.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 A B C D E",
]


@dataclass(frozen=True)
class RandomSpec:
    """Dimensions of one random model: the vision tower (SigLIP) and the language model (Qwen2)."""

    name: str
    vision: dict
    text: dict
    tie_word_embeddings: bool
    bpe_vocab: int  # size the tiny tokenizer is trained to; the LM vocab may be larger (real size)
    dtype: str  # dtype the weights are saved in


_SIGLIP_SO400M = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
    image_size=384, patch_size=14, vision_use_head=False,
)

SPECS: dict[str, RandomSpec] = {
    # A few hundred thousand parameters, 384 px so a frame gives the real 27x27 -> 14x14 = 196 tokens.
    # Widths are multiples of 64 so bitsandbytes' 4-bit CPU kernels accept every quantized linear.
    "tiny": RandomSpec(
        name="tiny",
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=384, patch_size=14, vision_use_head=False),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0),
        tie_word_embeddings=False,
        bpe_vocab=512,
        dtype="float32",
    ),
    # llava-hf/llava-onevision-qwen2-0.5b-ov-hf: SigLIP-so400m + Qwen2-0.5B.
    "llava-onevision-0.5b": RandomSpec(
        name="llava-onevision-0.5b",
        vision=_SIGLIP_SO400M,
        text=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
                  vocab_size=152000, tie_word_embeddings=True),
        tie_word_embeddings=True,
        bpe_vocab=512,
        dtype="bfloat16",
    ),
    # llava-hf/llava-onevision-qwen2-7b-ov-hf: SigLIP-so400m + Qwen2-7B.
    "llava-onevision-7b": RandomSpec(
        name="llava-onevision-7b",
        vision=_SIGLIP_SO400M,
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0,
                  vocab_size=152128),
        tie_word_embeddings=False,
        bpe_vocab=512,
        dtype="bfloat16",
    ),
}


def is_random_spec(spec: str) -> bool:
    return spec.startswith(RANDOM_PREFIX)


def random_spec(spec: str) -> RandomSpec:
    name = spec[len(RANDOM_PREFIX):]
    if name not in SPECS:
        known = ", ".join(RANDOM_PREFIX + n for n in SPECS)
        raise ModelError(f"unknown random model '{spec}'; known: {known}")
    return SPECS[name]


def cache_root() -> Path:
    """Where random models are materialised: $DYCOKE_CACHE, else ~/.cache/dycoke."""
    return Path(os.environ.get("DYCOKE_CACHE") or Path.home() / ".cache" / "dycoke")


def materialise(spec: RandomSpec, root: Path | None = None) -> Path:
    """Build the spec's folder once (atomically: a crash never leaves a half folder) and return it."""
    folder = (root or cache_root()) / "random" / f"{spec.name}-v{FORMAT_VERSION}"
    if (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    _write_folder(spec, tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its folder is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_folder(spec: RandomSpec, folder: Path) -> None:
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    tokenizer = build_tokenizer(spec.bpe_vocab)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(spec.text)
    text.setdefault("vocab_size", len(tokenizer))
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    config = LlavaOnevisionConfig(
        vision_config=dict(spec.vision, model_type="siglip_vision_model"),
        text_config=dict(text, model_type="qwen2"),
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        tie_word_embeddings=spec.tie_word_embeddings,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(SEED)
    dtype = getattr(torch, spec.dtype)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlavaOnevisionForConditionalGeneration(config).to(dtype)
    if spec.name == "tiny":
        _widen_init(model)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    _write_preprocessor(folder, spec.vision["image_size"])


def _widen_init(model) -> None:
    """Re-draw the tiny model's weights with a larger spread: the default std of 0.02 gives nearly
    uniform logits, whose greedy text is one repeated token and hides ordering bugs."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def _write_preprocessor(folder: Path, size: int) -> None:
    """The video preprocessing settings of the LLaVA-OneVision checkpoints, in their file format."""
    settings = {
        "size": {"height": size, "width": size},
        "resample": 3,  # bicubic
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    (folder / "video_preprocessor_config.json").write_text(json.dumps(settings, indent=2))


def build_tokenizer(vocab_size: int):
    """A deterministic byte-level BPE with the special tokens the LLaVA-OneVision prompt uses."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, additional_special_tokens=["<|im_start|>", "<image>", "<video>"],
    )
