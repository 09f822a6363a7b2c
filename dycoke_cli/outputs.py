"""Files the tool writes (answers, merged answers, profile reports): resolved once, checked before any
work, written by one process at a time, and never a file other than the one named.

Why it is built this way:
- An output given through a symbolic link is resolved once, here, and every later step (the checks,
  the lock, the repair of a torn line, the appends, an atomic rewrite) works on the file it names:
  a rewrite by name would replace the link itself and leave the real file behind.
- Outputs are regular files. A device or a FIFO cannot be resumed or replaced atomically, and reading
  one back to resume (/dev/zero, /dev/full) never ends: such a name is refused before any work.
- Two `dycoke run` on one answers file would both answer everything and interleave their lines, so a
  writer holds two exclusive locks for as long as it may write, and a second process is refused at
  once (exit 2):
  - an flock on a hidden file beside the output, which survives the output being replaced by an
    atomic rewrite; it is opened without following links (a planted link never leads the lock to
    truncate another file) and must be a regular file; the holder removes it on the way out and a
    taker re-checks after locking that the file it locked is still the one on disk;
  - an flock on the output file itself, which belongs to the file rather than to a name, so a second
    name for it (a hard link, a link through another folder) meets the same lock.
  The operating system drops both when their holder dies, so a killed run never blocks the next one.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import ExitStack, contextmanager
from pathlib import Path

from dycoke_cli.errors import BadInputError


def resolve_output(path: Path) -> Path:
    """The file `path` names, symbolic links followed once (the path as given when there are none)."""
    real = Path(os.path.realpath(path))
    return path if real == Path(os.path.abspath(path)) else real


def check_writable(path: Path, flag: str) -> None:
    """Refuse, before any work, an output that is a directory, not a regular file, or cannot be written."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # the folder checks below say what is wrong
        st = None
    except OSError as exc:  # a loop of links, a name too long
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise BadInputError(f"{flag} {path} is a directory; give a file path")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{flag} {path} is not a regular file (a device or a pipe); give a file path")
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder will be created under its first existing ancestor
    if not existing.is_dir():
        raise BadInputError(f"cannot write {path}: {existing} is not a folder")
    if st is not None and not os.access(path, os.W_OK):
        raise BadInputError(f"cannot write {path}: permission denied")
    if st is None and not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {path}: no permission to create files in {existing}")


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _in_use(path: Path, holder: str) -> BadInputError:
    return BadInputError(f"{path} is being written by another dycoke process ({holder}); wait for it to finish or "
                         "write elsewhere")


def _open_regular(path: Path, flags: int, what: str) -> int:
    """A descriptor on `path` opened without following a link, refused unless it is a regular file."""
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | nofollow, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadInputError(f"{what} {path} is a symbolic link; remove it (dycoke makes this file itself)") from None
        if exc.errno == errno.EISDIR:
            raise BadInputError(f"{what} {path} is a directory; remove it (dycoke makes this file itself)") from None
        raise BadInputError(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInputError(f"{what} {path} is not a regular file; remove it (dycoke makes this file itself)")
    return fd


@contextmanager
def _name_lock(path: Path, fcntl):
    """The flock on the hidden file beside `path`: one holder per output name."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = _open_regular(lock, os.O_RDWR | os.O_CREAT, "the lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise _in_use(path, f"pid {holder}") from None
        try:
            same = os.fstat(fd).st_ino == os.lstat(lock).st_ino
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


@contextmanager
def _file_lock(path: Path, fcntl):
    """The flock on the output file itself (created empty if missing; removed again if the block fails
    before writing anything into it): one holder per file, whatever name leads to it."""
    created = not os.path.lexists(path)
    fd = _open_regular(path, os.O_RDONLY | (os.O_CREAT if created else 0), "the output")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise _in_use(path, "through another name for the same file") from None
        try:
            yield
        except BaseException:
            if created and _same_empty_file(path, fd):
                path.unlink()
            raise
    finally:
        os.close(fd)


def _same_empty_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino) and on_disk.st_size == 0


@contextmanager
def exclusive(path: Path):
    """Hold the one-writer locks of `path` (an already resolved output) for the block; BadInputError at
    once if another process holds either."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: one writer is the user's responsibility
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(_name_lock(path, fcntl))
        path.parent.mkdir(parents=True, exist_ok=True)
        stack.enter_context(_file_lock(path, fcntl))
        yield
