"""The videos a user names on the command line: a file, a folder of videos, or a glob pattern.

`dycoke ask DIR "q"` and `dycoke ask "clips/*.mp4" "q"` answer every video they name, in sorted
order; a folder contributes the files directly inside it whose suffix is a video container's (not
its subfolders). A pattern the shell already expanded arrives as several files: the leading
arguments that are existing video files are videos too, so `dycoke ask clips/*.mp4 "q"` works
unquoted. A URL is refused by name: only local files are read (download it first).
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from dycoke_cli.errors import VideoError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp",
                  ".gif")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # scheme:/ (a Path has already folded `//` into `/`)
_GLOB = re.compile(r"[*?\[]")


def is_url(text: str) -> bool:
    return bool(_URL.match(str(text)))


def url_error(text: str) -> VideoError:
    return VideoError(f"URLs are not supported ({text}): dycoke reads local files only; download the video "
                      "first (e.g. curl -L -o clip.mp4 URL) and pass the file")


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def one(given: str) -> Path:
    """The video file one argument names (checked later, like any video); a URL is refused by name."""
    if is_url(given) and not Path(given).exists():
        raise url_error(given)
    return Path(given).expanduser()


def expand(given: str) -> list[Path]:
    """The videos one argument names: a file as is (checked later, like any video), a folder's videos,
    or a glob pattern's matches, sorted. VideoError when a folder or pattern names none."""
    path = one(given)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if is_video_file(p))
        if not found:
            raise VideoError(f"{given} is a folder with no video in it (looked for "
                             f"{', '.join(VIDEO_SUFFIXES[:6])}, ...)")
        return found
    if _GLOB.search(given) and not path.exists():
        found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not found:
            raise VideoError(f"no file matches {given}")
        return found
    return [path]


def split_arguments(video: str, rest: list[str]) -> tuple[list[Path], list[str]]:
    """(videos, questions) from `VIDEO [QUESTION]...`: VIDEO expanded, then the leading arguments that
    are existing video files (a glob the shell expanded) taken as videos too."""
    videos = expand(video)
    while rest and is_video_file(Path(rest[0]).expanduser()):
        videos.append(Path(rest.pop(0)).expanduser())
    return videos, rest
