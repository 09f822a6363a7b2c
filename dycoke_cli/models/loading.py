"""Load a model for inference: device, dtype and bitsandbytes quantization chosen in one place."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field

from dycoke_cli.errors import BadInputError, ModelError, first_line, is_out_of_memory
from dycoke_cli.models import preflight
from dycoke_cli.models.base import FamilyAdapter
from dycoke_cli.models.builtin import is_builtin_spec
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
    attention: str = "sdpa"  # the attention implementation the language model runs (a method's hook falls back to it)
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


SMALL_MODEL_WIDTH = 512  # a language model narrower than this runs its CPU work on one thread
_default_threads: list[int] = []  # torch's own choice, read before this module first changed it


def choose_threads(adapter: FamilyAdapter, device: str, notes: list[str] | None = None) -> None:
    """On the CPU, one thread for a small model (a language model narrower than SMALL_MODEL_WIDTH,
    e.g. builtin:shapes): its matrix products take microseconds, too little to split across cores, and
    on a machine busy with other work every split op waits for the thread the scheduler has not run
    yet (measured on builtin:shapes on a loaded 2-core machine: 12 ms per decode step on one thread,
    25-900 ms on two). Larger models get torch's own thread count back. OMP_NUM_THREADS, when set,
    is the user's choice and wins."""
    import os

    import torch

    if device != "cpu" or os.environ.get("OMP_NUM_THREADS", "").strip():
        return
    if not _default_threads:
        _default_threads.append(torch.get_num_threads())
    width = getattr(adapter.text_config, "hidden_size", SMALL_MODEL_WIDTH)
    threads = 1 if width < SMALL_MODEL_WIDTH else _default_threads[0]
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    if notes is not None and threads == 1 and _default_threads[0] > 1:
        notes.append(f"threads: 1 (a language model {width} wide: too small to split across cores; "
                     "OMP_NUM_THREADS overrides)")


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


def inspect_model(spec: str, offline: bool = False, trust_remote_code: bool = False) -> ModelInfo:
    """Resolve `spec`, read its configuration and tokenizer, and pick the family adapter."""
    from transformers import AutoConfig, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' own bars (shards); Hub downloads keep theirs
    source = resolve(spec, offline)
    try:
        config = AutoConfig.from_pretrained(source.folder, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - unknown model_type, remote code refused, a file that fails validation
        raise ModelError(f"cannot read the configuration of '{spec}': {first_line(exc)}") from None
    adapter_cls = adapter_for(getattr(config, "model_type", "unknown"), spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(source.folder, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the tokenizer of '{spec}': {first_line(exc)}") from None
    adapter = adapter_cls(config, tokenizer, source.folder, source.random_weights)
    if not (source.random_weights or is_builtin_spec(spec)):  # a folder we did not make
        preflight.check_template(adapter, spec)
        preflight.check_weights(source.folder, config, adapter_cls.model_class(), spec)
    return ModelInfo(source=source, config=config, adapter=adapter)


def _is_bad_checkpoint(exc: BaseException) -> bool:
    """Errors that mean the files are unusable (bad input), as opposed to a failure while running."""
    return isinstance(exc, (OSError, ValueError, KeyError)) or type(exc).__name__ == "SafetensorError"


def load_model(
    spec: str | ModelInfo,
    device: str = "auto",
    dtype: str = "auto",
    quant: str = "auto",
    offline: bool = False,
    trust_remote_code: bool = False,
    attention: str = "sdpa",
) -> LoadedModel:
    """Load the weights of `spec` (a --model value, or what inspect_model found) onto the chosen device.
    `attention` is the implementation the model runs (transformers' attn_implementation: sdpa, eager,
    flash_attention_2, ...); a method's hook falls back to it."""
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
                attn_implementation=attention,
            )
    except Exception as exc:  # noqa: BLE001 - missing or damaged weight files, shapes that do not fit
        if is_out_of_memory(exc) or not _is_bad_checkpoint(exc):
            raise
        raise ModelError(f"cannot load the weights of '{info.source.spec}': {first_line(exc)}") from None
    model.eval()
    adapter.attach(model)
    choose_threads(adapter, device, choices)
    decode = None
    if device == "cpu" and quant == "none":
        decode = cpu_decode.prepare(model, adapter.text_layers(), dtype, explicit_dtype, choices, *overrides,
                                    implementation=attention)
        attention = decode.implementation
    return LoadedModel(adapter=adapter, source=info.source, device=device, dtype=dtype, quant=quant,
                       notices=notices, load_s=time.perf_counter() - started, choices=choices, attention=attention,
                       decode=decode)
