"""A model folder from a user or the Hub, checked before anything is materialised.

A folder is code and data we did not make: its chat template is a program (Jinja, sandboxed against
escapes but not against `{{ 'x' * 10**10 }}` or loops that never end), and its config.json decides
what transformers builds, whatever the weights are. A template bomb, or a config that names another
family than the weights (qwen3_vl over LLaVA weights: transformers builds the default-sized model and
fills it with random values), grows the process by gigabytes before anything fails, or silently
answers from random weights. So, before any weight loads:

- `check_files`: the small files loading reads (config, tokenizer, templates, processor settings) are
  regular files within the size limits of dycoke_cli.inputs (a FIFO would hang the tokenizer);
- `check_template`: the chat template is rendered once on a probe conversation with a memory and a
  time bound, and its output around that one-line question must stay short;
- `check_weights`: the tensor shapes in the safetensors headers (read with safetensors' `safe_open`,
  nothing loaded) must hold every parameter shape of the model config.json describes, built on
  PyTorch's meta device (no memory). Shapes, not names: transformers renames checkpoint keys on load,
  a shape survives renaming.

Built-in and random-weight models are made by this package and skip these checks.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from dycoke_cli import inputs
from dycoke_cli.errors import BadInputError, ModelError

TEMPLATE_SECONDS = 5.0  # a real template renders in milliseconds
TEMPLATE_MEMORY = 1 << 30  # bytes the probe render may add to the process
MAX_TEMPLATE_OUTPUT = 256 * 1024  # characters a template may write around the probe (real ones: < 3,000)
_PROBE = [("What happens in this video?", "Something happens."), ("And then?", None)]
_SMALL_FILES = {"config.json": inputs.MAX_CONFIG_BYTES, "chat_template.jinja": inputs.MAX_TEMPLATE_BYTES,
                "chat_template.json": inputs.MAX_TEMPLATE_BYTES}
_READ_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")


def check_files(folder: Path, spec: str) -> None:
    """Every file loading may read is a regular file (a FIFO would block it), the small ones within their
    size limits."""
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".safetensors"):
            limit = float("inf")  # weights are memory-mapped, never read whole
        elif path.name.endswith(_READ_SUFFIXES):
            limit = _SMALL_FILES.get(path.name, inputs.MAX_MODEL_FILE_BYTES)
        else:
            continue
        try:
            inputs.check_regular(path, limit, "model file")
        except BadInputError as exc:
            raise ModelError(f"model '{spec}': {exc}") from None


class _Expired(Exception):
    """The probe render ran past TEMPLATE_SECONDS."""


def check_template(adapter, spec: str) -> None:
    """Render the adapter's chat template on a probe conversation within TEMPLATE_MEMORY and
    TEMPLATE_SECONDS; refuse a template that runs away or writes more than MAX_TEMPLATE_OUTPUT."""
    from dycoke_cli.models.base import conversation

    messages = conversation(_PROBE, "A probe system prompt.", adapter.video_part)
    try:
        with _bounded():
            text = adapter.tokenizer.apply_chat_template(messages, chat_template=adapter.chat_template,
                                                         add_generation_prompt=True, tokenize=False)
    except (MemoryError, _Expired) as exc:
        what = (f"needs more than {TEMPLATE_MEMORY >> 20} MiB" if isinstance(exc, MemoryError)
                else f"takes more than {TEMPLATE_SECONDS:g} s")
        raise ModelError(f"the chat template of '{spec}' {what} to render a two-line conversation; it is "
                         "not usable (check chat_template.jinja or the template in tokenizer_config.json)") from None
    except Exception:  # noqa: BLE001 - a template may refuse this probe (no system turn...): the real prompt decides
        return
    if isinstance(text, str) and len(text) > MAX_TEMPLATE_OUTPUT:
        raise ModelError(f"the chat template of '{spec}' writes {len(text):,} characters around a two-line "
                         f"conversation (at most {MAX_TEMPLATE_OUTPUT:,} are accepted); it is not usable")


@contextmanager
def _bounded():
    """Cap the address space at its current size + TEMPLATE_MEMORY (MemoryError past it) and, in the
    main thread, the wall time at TEMPLATE_SECONDS (_Expired); both restored after the block."""
    with _memory_cap(), _time_cap():
        yield


@contextmanager
def _memory_cap():
    try:
        import resource

        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):  # no /proc or no rlimits here: the time cap still holds
        yield
        return
    cap = used + TEMPLATE_MEMORY
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextmanager
def _time_cap():
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(number, frame):
        raise _Expired()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, TEMPLATE_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_weights(folder: Path, config, model_class, spec: str) -> None:
    """Refuse weights that do not hold every parameter shape of the model config.json describes."""
    import torch
    from safetensors import safe_open

    if getattr(config, "quantization_config", None):
        return  # pre-quantized weights are packed: their shapes are not the model's
    have: Counter = Counter()
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as weights:
                for name in weights.keys():
                    have[tuple(weights.get_slice(name).get_shape())] += 1
        except Exception as exc:  # noqa: BLE001 - a damaged header: the file cannot load
            raise ModelError(f"cannot read the weights of '{spec}' ({path.name}): {str(exc).splitlines()[0]}") from None
    try:
        with torch.device("meta"):
            model = model_class(config)
    except Exception as exc:  # noqa: BLE001 - a config transformers cannot build a model from
        raise ModelError(f"config.json of '{spec}' does not describe a model that can be built: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    need = Counter(tuple(p.shape) for _, p in model.named_parameters())  # a tied weight counts once
    missing = need - have
    if missing:
        shape, _ = missing.most_common(1)[0]
        count = sum(missing.values())
        raise ModelError(
            f"the weights of '{spec}' do not match its config.json ({config.model_type}): {count:,} of "
            f"{sum(need.values()):,} parameters have no tensor of their shape (e.g. {list(shape)}); the config "
            "and the weights come from different models"
        )
