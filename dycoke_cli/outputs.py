"""Files the tool writes (answers, merged answers, profile reports): checked before any work, and
written by one process at a time.

Two `dycoke run` on one answers file would both answer everything and interleave their lines, so a
writer holds an exclusive lock for as long as it may write: a second process is refused at once with
exit code 2. The lock is an flock on a hidden file beside the output, so the operating system drops
it when its holder dies (a killed run never blocks the next one); the holder removes the file on the
way out, and a taker re-checks after locking that the file it locked is still the one on disk, so a
removal racing a new taker cannot let two processes in.
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path

from dycoke_cli.errors import BadInputError


def check_writable(path: Path, flag: str) -> None:
    """Refuse, before any work, an output that is a directory or cannot be written."""
    if path.is_dir():
        raise BadInputError(f"{flag} {path} is a directory; give a file path")
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder will be created under its first existing ancestor
    if not existing.is_dir():
        raise BadInputError(f"cannot write {path}: {existing} is not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise BadInputError(f"cannot write {path}: permission denied")
    if not path.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {path}: no permission to create files in {existing}")


def check_folder(path: Path, flag: str) -> None:
    """Refuse, before any work, a folder to write into that is a file or cannot be created or written."""
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{flag} {path} is a file; give a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInputError(f"cannot write into {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write into {path}: no permission to create files in {existing}")


def file_tag(text: str, unique: bool = False) -> str:
    """`text` as a safe part of a file name: every character but letters, digits and `.=+-` becomes `_`,
    and so does a leading dot (a setting `dycoke:k=0.5,p=0.8` -> `dycoke_k=0.5_p=0.8`; nothing can name
    a folder above). With `unique`, text that had to change gets a short hash of the original, so two
    texts (two record ids) never share a tag."""
    tag = re.sub(r"[^A-Za-z0-9.=+-]", "_", text)[:80]
    tag = "_" + tag[1:] if tag.startswith(".") else tag or "_"
    if unique and tag != text:
        tag += "-" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return tag


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextmanager
def exclusive(path: Path):
    """Hold the one-writer lock of `path` for the block; BadInputError at once if another process has it."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: one writer is the user's responsibility
        yield
        return
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BadInputError(f"{path} is being written by another dycoke process (pid {holder}); wait for it "
                                "to finish or write elsewhere") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by its last holder after we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        os.close(fd)
