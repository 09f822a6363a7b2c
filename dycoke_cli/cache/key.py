"""What names an encoded video in the cache: one JSON description of everything that changes the
features, and its SHA-256 as the entry's name.

The features of a video depend on
  - the file: its resolved path, size, modification time in nanoseconds, and the SHA-256 of its
    first and last MiB (the container's header and index live there; touching or rewriting the file
    changes the time). `verify=True` (--cache-verify) hashes the whole file instead, for a file
    changed in the middle with its size and time put back; such entries are kept apart from the
    others (their keys differ). A caller that knows the bytes better than the file (a server's
    temporary copy of a video sent in a request, whose path and time change every time it is
    written) gives their identity instead (`content`, e.g. {"sha256": ...} of all the bytes), and the
    path then drops out of the key;
  - what the plan decodes and how it encodes it: `Plan.encoding_key` (the frames, their timestamps,
    and whatever else a plan says decides the encoding: a method that acts inside the vision tower
    adds its settings there, and the key follows without a change here);
  - the model: its family, folder, weights (a Hub snapshot's files link to blobs named by their own
    SHA-256, which is taken as is; other files by size, time and first and last MiB) and the
    configuration files preprocessing reads;
  - how it runs: dtype, quantization, attention implementation, the kind of device (GPU or CPU
    model: kernels differ in their last bits), torch and transformers versions;
  - this package's version and the entry format's version.
Any change misses; nothing else (working directory, how the path was typed, the method's parameters
beyond its frame subset) does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

EDGE_BYTES = 2**20  # hashed at each end of a file that is not hashed whole
CONFIG_FILES = ("config.json", "preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json")
_HUB_BLOB = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class EntryKey:
    """digest: the entry's name (hex SHA-256 of `description`). label: what `dycoke cache` shows."""

    digest: str
    description: dict
    label: dict


def file_digest(path: Path, whole: bool = False) -> str:
    """SHA-256 of a file's content, or of its first and last MiB only."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if whole:
            for block in iter(lambda: f.read(4 * 2**20), b""):
                digest.update(block)
            return digest.hexdigest()
        digest.update(f.read(EDGE_BYTES))
        size = f.seek(0, 2)
        if size > EDGE_BYTES:
            f.seek(max(EDGE_BYTES, size - EDGE_BYTES))
            digest.update(f.read(EDGE_BYTES))
    return digest.hexdigest()


def video_identity(path: Path, verify: bool = False) -> dict:
    """The video file as the key sees it (see the module docstring)."""
    resolved = Path(path).resolve()
    status = resolved.stat()
    content = {"sha256": file_digest(resolved, whole=True)} if verify else {
        "sha256_first_last_mib": file_digest(resolved)}
    return {"path": str(resolved), "size": status.st_size, "mtime_ns": status.st_mtime_ns, **content}


def _weights_identity(path: Path) -> dict:
    target = path.resolve()
    if path.is_symlink() and _HUB_BLOB.fullmatch(target.name):  # huggingface-hub's blob: named by its hash
        return {"name": path.name, "sha256": target.name}
    status = target.stat()
    return {"name": path.name, "size": status.st_size, "mtime_ns": status.st_mtime_ns,
            "sha256_first_last_mib": file_digest(target)}


@functools.cache
def _folder_identity(folder: str) -> dict:
    """A checkpoint folder's weights and configuration files (computed once per process)."""
    root = Path(folder)
    configs = {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
               for name in CONFIG_FILES if (root / name).is_file()}
    weights = [_weights_identity(p) for p in sorted(root.glob("*.safetensors"))]
    return {"folder": folder, "weights": weights, "configs": configs}


def device_kind(device: str) -> str:
    """`cuda:<GPU name>` or `cpu:<processor model>`: where the features were computed."""
    if device.startswith("cuda"):
        import torch

        return f"cuda:{torch.cuda.get_device_name(device)}"
    from dycoke_cli.models.cpu_dtype import read_cpu

    return f"cpu:{read_cpu().model}"


def model_identity(lm) -> dict:
    """The loaded model (a models.LoadedModel) and how it runs."""
    import torch
    import transformers

    return {"family": type(lm.adapter).__name__, **_folder_identity(str(Path(lm.source.folder).resolve())),
            "dtype": lm.dtype, "quant": lm.quant, "attention": lm.attention, "device": device_kind(lm.device),
            "torch": torch.__version__, "transformers": transformers.__version__}


def canonical(value) -> str:
    """One spelling of a JSON-able value (tuples as lists, keys sorted): equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def entry_key(lm, plan, verify: bool = False, content: dict | None = None) -> EntryKey:
    """The key of `plan`'s encoding by `lm` (see the module docstring); `content`, when given, stands
    for the video file (its path drops out of the encoding key too)."""
    from dycoke_cli import __version__
    from dycoke_cli.cache.store import VERSION

    description = {
        "format": VERSION, "package": __version__,
        "video": {"content": content} if content is not None else video_identity(plan.video, verify),
        "encoding": plan.encoding_key if content is None else plan.bytes_encoding_key,
        "model": model_identity(lm),
    }
    video = str(Path(plan.video).resolve()) if content is None else ", ".join(
        f"{name}:{value}" for name, value in sorted(content.items()))
    label = {"video": video, "model": lm.source.spec, "frames": plan.frames.count,
             "dtype": lm.dtype, "device": lm.device.split(":")[0]}
    return EntryKey(digest=hashlib.sha256(canonical(description).encode()).hexdigest(), description=description,
                    label=label)
