"""One cache entry as one file: safetensors for the tensors, JSON for the rest; nothing that can run
code when it is read (no pickle), and nothing a reader can mistake for a whole entry unless it is one.

An entry is `<key>.safetensors`. Its safetensors metadata holds two strings:

  "dycoke"  JSON: {"format": FORMAT, "version": VERSION, "key": the entry's key, "data_bytes": the
            length of the data section, ...what the caller stored}
  "sha256"  hex SHA-256 of the "dycoke" string's UTF-8 bytes followed by the data section (every
            tensor's bytes), so a flipped bit anywhere but in this checksum itself is caught.

`read_entry` trusts nothing: a regular file; a header length that fits the file; JSON that parses;
our format, our version, the key looked up (a file copied under another name is foreign); a data
section exactly as long as written (truncation); the checksum; and only then safetensors itself,
which checks every tensor's offsets and dtype. Any failure is `Unusable` with a reason in words.

`write_entry` writes to a temporary name in the same folder, unique per process and call, flushes and
fsyncs it, then renames it over the final name. A reader therefore sees the old entry or the whole
new one; two writers of one key each write a whole file and the last rename wins; a crash leaves a
temporary file at most (folder.sweep removes old ones) and never a torn entry. The folder is fsynced
after the rename so the entry survives a power cut with its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import struct
from pathlib import Path

FORMAT = "dycoke.encoding"
VERSION = 1
SUFFIX = ".safetensors"
TEMP_SUFFIX = ".tmp"
MAX_HEADER = 16 * 2**20  # a header longer than this is not one of ours


class Unusable(Exception):
    """An entry that is there but cannot be used; the message says why in a few words."""


def entry_path(folder: Path, key: str) -> Path:
    return folder / f"{key}{SUFFIX}"


def temp_path(folder: Path, key: str) -> Path:
    """A name no other writer (process or call) uses, hidden, marked as temporary."""
    return folder / f".{key}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _checksum(info_text: str, data) -> str:
    digest = hashlib.sha256(info_text.encode("utf-8"))
    digest.update(data)
    return digest.hexdigest()


def _split(blob: bytes) -> tuple[dict, memoryview]:
    """(header JSON, data section) of safetensors bytes; Unusable when the framing is broken."""
    if len(blob) < 8:
        raise Unusable(f"truncated ({len(blob)} bytes)")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > MAX_HEADER or 8 + length > len(blob):
        raise Unusable("truncated or not a safetensors file (header runs past the end)")
    try:
        header = json.loads(bytes(blob[8:8 + length]))
    except (ValueError, UnicodeDecodeError):
        raise Unusable("damaged header") from None
    if not isinstance(header, dict):
        raise Unusable("damaged header")
    return header, memoryview(blob)[8 + length:]


def encode_entry(key: str, tensors: dict, info: dict) -> bytes:
    """The bytes of an entry: `tensors` (name -> CPU tensor) and `info` (JSON-able) under `key`."""
    from safetensors.torch import save

    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    _, data = _split(save(tensors))
    text = json.dumps({**info, "format": FORMAT, "version": VERSION, "key": key, "data_bytes": len(data)},
                      sort_keys=True, allow_nan=False)
    blob = save(tensors, metadata={"dycoke": text, "sha256": _checksum(text, data)})
    if bytes(_split(blob)[1]) != bytes(data):  # the data section never depends on the metadata
        raise RuntimeError("safetensors laid the tensors out differently on the second save")
    return blob


def decode_entry(blob: bytes, key: str) -> tuple[dict, dict]:
    """(tensors on the CPU, info) of an entry's bytes, every check passed; else Unusable."""
    from safetensors.torch import load

    header, data = _split(blob)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or "dycoke" not in meta:
        raise Unusable("not a dycoke cache entry")
    try:
        info = json.loads(meta["dycoke"])
    except (ValueError, TypeError):
        raise Unusable("damaged header") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise Unusable("not a dycoke cache entry")
    if info.get("version") != VERSION:
        raise Unusable(f"written by another version of the cache format ({info.get('version')!r}, this is {VERSION})")
    if info.get("key") != key:
        raise Unusable("holds another key (a foreign or renamed file)")
    if info.get("data_bytes") != len(data):
        raise Unusable(f"truncated ({len(data):,} of {info.get('data_bytes')!r} data bytes)")
    if meta.get("sha256") != _checksum(meta["dycoke"], data):
        raise Unusable("checksum mismatch (damaged)")
    try:
        tensors = load(blob)
    except Exception as exc:  # noqa: BLE001 - safetensors' own checks (offsets, dtypes) failed
        raise Unusable(f"unreadable tensors ({type(exc).__name__})") from None
    return tensors, info


def read_entry(path: Path, key: str, limit: int) -> tuple[dict, dict]:
    """The entry at `path`, checked; a file over `limit` bytes is not read at all (memory stays
    bounded whatever stands there). FileNotFoundError when there is none (a plain miss)."""
    try:
        with open(path, "rb") as f:
            status = os.fstat(f.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise Unusable("not a regular file")
            if status.st_size > limit:
                raise Unusable(f"larger than the cache's cap ({status.st_size:,} bytes)")
            blob = f.read()
    except IsADirectoryError:
        raise Unusable("a directory stands in its place") from None
    return decode_entry(blob, key)


def read_info(path: Path) -> dict:
    """The JSON part of an entry, header only (for listing: nothing hashed or loaded). Unusable when
    the header cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise Unusable("truncated")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER:
                raise Unusable("not a safetensors file")
            header, _ = _split(head + f.read(length))
    except IsADirectoryError:
        raise Unusable("a directory stands in its place") from None
    try:
        info = json.loads(header["__metadata__"]["dycoke"])
    except (KeyError, TypeError, ValueError):
        raise Unusable("not a dycoke cache entry") from None
    if not isinstance(info, dict):
        raise Unusable("not a dycoke cache entry")
    return info


def write_entry(folder: Path, key: str, blob: bytes) -> Path:
    """Write an entry atomically (see the module docstring). OSError (read-only, full disk, no
    permission) propagates, with the temporary file removed."""
    tmp, final = temp_path(folder, key), entry_path(folder, key)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _sync_folder(folder)
    return final


def _sync_folder(folder: Path) -> None:
    """Make the rename durable; a platform or filesystem that cannot fsync a folder is no error."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
