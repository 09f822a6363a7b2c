"""Turn a `--model` value into a local folder: a folder as is, a built-in checkpoint (its digests
checked), a random spec built once, a Hub id downloaded through huggingface-hub (its cache, its
progress bar), never touching the network offline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dycoke_cli.errors import ModelError

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
BUILTIN_HINT = "--model builtin:shapes (ships with dycoke: no download)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what loading needs: weights as safetensors (never pickles), configs, tokenizer, templates.
_ALLOW = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user asked for
    folder: Path
    random_weights: bool


def hub_offline(offline: bool) -> bool:
    from dycoke_cli import env

    return offline or env.flag("HF_HUB_OFFLINE")


def resolve(spec: str, offline: bool = False, pulling: bool = False) -> ModelSource:
    """Find or fetch the folder for `spec`. Raises ModelError with what to do next (`pulling`: for
    `dycoke models pull`, whose errors give the reason a download cannot happen, not that command).
    The kinds of model are imported here, not with the module: `--help` and shell completion read
    DEFAULT_MODEL and nothing else."""
    from dycoke_cli.models.builtin import builtin_folder, is_builtin_spec
    from dycoke_cli.models.random_specs import is_random_spec, materialise, random_spec

    if is_random_spec(spec):
        return ModelSource(spec, materialise(random_spec(spec)), random_weights=True)
    if is_builtin_spec(spec):
        return ModelSource(spec, builtin_folder(spec), random_weights=False)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model {spec} is a file; point it at a checkpoint's folder")
        check_folder(path, spec)
        return ModelSource(spec, path, random_weights=False)
    if not _HUB_ID.match(spec):
        raise ModelError(
            f"unknown model '{spec}': not a local folder, a Hub id (owner/name), builtin:shapes or a random spec (random:tiny)"
        )
    folder = _download(spec, hub_offline(offline), pulling)
    check_folder(folder, spec)
    return ModelSource(spec, folder, random_weights=False)


PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_folder(folder: Path, spec: str) -> None:
    """A checkpoint folder that cannot load is bad input, said in one line before anything heavy runs:
    no or malformed config.json, or no safetensors weights (pickles can run code: never loaded)."""
    config = folder / "config.json"
    if not config.exists():
        raise ModelError(f"model folder '{spec}' has no config.json; point --model at a saved checkpoint")
    from dycoke_cli.models.preflight import check_files

    check_files(folder, spec)
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ModelError(f"config.json of '{spec}' cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(parsed, dict):
        raise ModelError(f"config.json of '{spec}' is not a JSON object")
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
    if pickles:
        raise ModelError(
            f"model folder '{spec}' holds only pickle weights ({pickles[0]}); dycoke loads safetensors only (a pickle "
            "can run code): convert once where you trust the file, e.g. "
            "model.save_pretrained(out, safe_serialization=True) in transformers"
        )
    raise ModelError(f"model folder '{spec}' has no weights (no *.safetensors file)")


def _download(repo_id: str, offline: bool, pulling: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    local_hint = (f"fetch it where the Hub is reachable with `dycoke models pull {repo_id}`, pass "
                  f"--model /path/to/folder, or try {BUILTIN_HINT}")
    if offline and pulling:
        raise ModelError(f"cannot download '{repo_id}': offline mode is on (HF_HUB_OFFLINE is set); "
                         "pull it with HF_HUB_OFFLINE unset on a machine that reaches the Hub")
    cached_only = offline or _hub_silent(repo_id, pulling)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_ALLOW, local_files_only=cached_only))
    except GatedRepoError:
        raise ModelError(f"model '{repo_id}' is gated: accept its licence on the Hub and log in (hf auth login)")
    except RepositoryNotFoundError:
        raise ModelError(f"model '{repo_id}' was not found on the Hub; check the id or pass a local folder")
    except LocalEntryNotFoundError:
        if offline:
            raise ModelError(f"model '{repo_id}' is not in the local cache and offline mode is on; {local_hint}")
        raise _unreachable(repo_id, "could not be reached or stopped answering") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"could not download '{repo_id}' ({type(exc).__name__}); {local_hint}")


def _hub_silent(repo_id: str, pulling: bool = False) -> bool:
    """Set the network timeouts and ask the Hub about `repo_id` (models/network.py). False when it
    answered; True when it did not but a copy is cached (then that copy is used, offline); NetworkError
    when it did not and nothing is cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from dycoke_cli.models import network

    timeout = network.timeout_s()
    network.configure(timeout)
    try:
        network.ask_hub(repo_id, timeout)
        return False
    except network.NoAnswer as silent:
        if pulling:
            raise _unreachable(repo_id, silent.reason, pulling=True) from None
        try:
            snapshot_download(repo_id, allow_patterns=_ALLOW, local_files_only=True)
            return True
        except LocalEntryNotFoundError:
            raise _unreachable(repo_id, silent.reason) from None


def _unreachable(repo_id: str, reason: str, pulling: bool = False):
    """The one-line error for a Hub that did not answer, with the ways to work without it."""
    from dycoke_cli.errors import NetworkError
    from dycoke_cli.models.network import TIMEOUT_ENV

    if pulling:
        return NetworkError(f"cannot download '{repo_id}': the Hugging Face Hub ({_endpoint()}) {reason} (no "
                            f"network, or a proxy or firewall in the way?); retry where it is reachable, or raise "
                            f"{TIMEOUT_ENV} on a slow network")
    return NetworkError(
        f"the Hugging Face Hub ({_endpoint()}) {reason}, and '{repo_id}' is not in the local cache; work offline "
        f"with {BUILTIN_HINT} or --model /path/to/folder (or, once it is cached, --offline), or raise "
        f"{TIMEOUT_ENV} on a slow network")


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT
