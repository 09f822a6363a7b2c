"""Load a model for inference: device, dtype and bitsandbytes quantization chosen in one place."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field

from dycoke_cli.errors import BadInputError, ModelError
from dycoke_cli.models.base import FamilyAdapter
from dycoke_cli.models.registry import adapter_for
from dycoke_cli.models.source import ModelSource, resolve

QUANT_CHOICES = ("auto", "4bit", "8bit", "none")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
# On the CPU the default is what measured fastest end to end (see README, "Choosing defaults on the CPU").
CPU_DEFAULT_QUANT = "none"
CPU_DEFAULT_DTYPE = "bfloat16"


@dataclass
class LoadedModel:
    adapter: FamilyAdapter
    source: ModelSource
    device: str  # "cpu" or "cuda:N"
    dtype: str
    quant: str  # "4bit" | "8bit" | "none"
    notices: list[str] = field(default_factory=list)  # one-line remarks for stderr (e.g. CPU fallback)
    load_s: float = 0.0  # resolving, reading and placing the weights
    choices: list[str] = field(default_factory=list)  # what was chosen and why (dtype, device), for -v
    decode: object | None = None  # CPU only: the decode kernel and threads (models/cpu_decode.py)

    @property
    def model(self):
        return self.adapter.model

    def generating(self):
        """The context of one `generate` call: the CPU decode path's (models/cpu_decode.py), else none."""
        return self.decode.generating() if self.decode is not None else nullcontext()

    def take_load_time(self) -> float:
        """The load time, once: the first answer of a process reports it, later ones 0 (so summing
        a column of answers never counts it twice)."""
        load_s, self.load_s = self.load_s, 0.0
        return load_s


def resolve_device(device: str, notices: list[str]) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        notices.append("no CUDA GPU found; running on the CPU (slow)")
        return "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BadInputError(f"--device {device}: no CUDA GPU is available; use --device cpu or auto")
        index = int(device.split(":")[1]) if ":" in device and device.split(":")[1].isdigit() else None
        if ":" in device and index is None:
            raise BadInputError(f"--device {device}: expected cuda:N with N a GPU index")
        if index is not None and index >= torch.cuda.device_count():
            raise BadInputError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) present")
        return f"cuda:{index if index is not None else torch.cuda.current_device()}"
    raise BadInputError(f"--device {device}: expected auto, cpu, cuda or cuda:N")


def resolve_dtype(dtype: str, device: str, notes: list[str] | None = None) -> str:
    """The dtype to load in. `auto`: bf16 on GPUs that support it (else fp16); on the CPU the faster
    of bf16 and fp32 on this processor (models/cpu_dtype.py: native-bf16 flags, else a cached probe;
    DYCOKE_CPU_DTYPE overrides). Why, one line, goes to `notes` (shown by -v)."""
    import torch

    if dtype not in DTYPE_CHOICES:
        raise BadInputError(f"--dtype {dtype}: expected one of {', '.join(DTYPE_CHOICES)}")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        chosen = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if notes is not None:
            notes.append(f"dtype: {chosen} on this GPU (bf16 {'supported' if chosen == 'bfloat16' else 'unsupported'})")
        return chosen
    from dycoke_cli.models.cpu_dtype import cpu_dtype

    try:
        choice = cpu_dtype()
    except Exception as exc:  # noqa: BLE001 - reading the processor must never stop a load
        if notes is not None:
            notes.append(f"dtype: {CPU_DEFAULT_DTYPE} on this CPU (capability unreadable: {type(exc).__name__})")
        return CPU_DEFAULT_DTYPE
    if notes is not None:
        notes.append(choice.line)
    return choice.dtype


def resolve_quant(quant: str, device: str) -> str:
    if quant not in QUANT_CHOICES:
        raise BadInputError(f"--quant {quant}: expected one of {', '.join(QUANT_CHOICES)}")
    if quant != "auto":
        return quant
    return "4bit" if device.startswith("cuda") else CPU_DEFAULT_QUANT


def quantization_config(quant: str, adapter_cls: type[FamilyAdapter], compute_dtype):
    """4-bit NF4 (bf16 compute) or 8-bit on the language model; vision tower and projector stay 16-bit."""
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    skip = list(adapter_cls.quant_skip_modules)
    if quant == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def _quiet_bitsandbytes() -> None:
    """bitsandbytes reports optional CPU kernels it could not find and every 8-bit dtype cast, on
    every call; neither is actionable for a user of this tool."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")


@dataclass
class ModelInfo:
    """A model before its weights load: where it is, its configuration, and an adapter that can already
    count tokens and build prompts. Enough to refuse bad settings without loading anything heavy."""

    source: ModelSource
    config: object
    adapter: FamilyAdapter

    @property
    def layers(self) -> int:
        return self.adapter.text_config.num_hidden_layers

    @property
    def context(self) -> int | None:
        return getattr(self.adapter.text_config, "max_position_embeddings", None)


def inspect_model(spec: str, offline: bool = False, trust_remote_code: bool = False) -> ModelInfo:
    """Resolve `spec`, read its configuration and tokenizer, and pick the family adapter."""
    from transformers import AutoConfig, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' own bars (shards); Hub downloads keep theirs
    source = resolve(spec, offline)
    try:
        config = AutoConfig.from_pretrained(source.folder, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError, TypeError) as exc:  # unknown model_type, remote code refused, bad file
        raise ModelError(f"cannot read the configuration of '{spec}': {_first_line(exc)}") from None
    adapter_cls = adapter_for(getattr(config, "model_type", "unknown"), spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(source.folder, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the tokenizer of '{spec}': {_first_line(exc)}") from None
    return ModelInfo(source=source, config=config,
                     adapter=adapter_cls(config, tokenizer, source.folder, source.random_weights))


def _is_bad_checkpoint(exc: BaseException) -> bool:
    """Errors that mean the files are unusable (bad input), as opposed to a failure while running."""
    return isinstance(exc, (OSError, ValueError, KeyError)) or type(exc).__name__ == "SafetensorError"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(
    spec: str | ModelInfo,
    device: str = "auto",
    dtype: str = "auto",
    quant: str = "auto",
    offline: bool = False,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load the weights of `spec` (a --model value, or what inspect_model found) onto the chosen device."""
    import time

    import torch

    started = time.perf_counter()
    notices: list[str] = []
    device = resolve_device(device, notices)
    choices: list[str] = []
    explicit_dtype = dtype != "auto"
    dtype = resolve_dtype(dtype, device, choices)
    quant = resolve_quant(quant, device)
    from dycoke_cli.models import cpu_decode, cpu_threads

    overrides = cpu_decode.read_overrides(), cpu_threads.read_override()  # bad values fail before loading
    _quiet_bitsandbytes()
    info = spec if isinstance(spec, ModelInfo) else inspect_model(spec, offline, trust_remote_code)
    adapter = info.adapter
    torch_dtype = getattr(torch, dtype)
    compute_dtype = torch_dtype if torch_dtype != torch.float32 else torch.bfloat16
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = type(adapter).model_class().from_pretrained(
                info.source.folder,
                dtype=torch_dtype,
                quantization_config=quantization_config(quant, type(adapter), compute_dtype),
                device_map={"": device},
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
            )
    except Exception as exc:  # noqa: BLE001 - missing or damaged weight files, shapes that do not fit
        if "out of memory" in str(exc).lower() or not _is_bad_checkpoint(exc):
            raise
        raise ModelError(f"cannot load the weights of '{info.source.spec}': {_first_line(exc)}") from None
    model.eval()
    adapter.attach(model)
    decode = None
    if device == "cpu" and quant == "none":
        decode = cpu_decode.prepare(model, adapter.text_layers(), dtype, explicit_dtype, choices, *overrides)
    return LoadedModel(adapter=adapter, source=info.source, device=device, dtype=dtype, quant=quant,
                       notices=notices, load_s=time.perf_counter() - started, choices=choices, decode=decode)
