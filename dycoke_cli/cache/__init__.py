"""The video cache: encoded videos kept on disk, so a video is decoded and run through the vision
tower once per model, not once per process.

  engine.encode(lm, plan, cache) --find--> a hit: the stored features and the figures of the encode
                                           that made them (nothing decoded, no tower run)
                                 --miss--> decode + encode as always --store--> kept for next time

Modules: key.py names an entry (everything that changes the features), store.py is the file format
(safetensors + JSON, atomic, checked on read), entry.py turns features into an entry and back with
their shapes checked, folder.py lists, evicts (least recently used, under a size cap) and removes.

The cache must never cost an answer. An entry that is unusable (truncated, damaged, foreign, of
another format version, of the wrong shapes, a directory in its place) is ignored with one note and
written again; a folder that cannot be written (read-only, full, no permission) or any other failure
turns the cache off for the rest of the process with one note; the answer comes either way.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from dycoke_cli.cache.folder import cache_folder, evict, make_private, touch
from dycoke_cli.cache.store import Unusable, encode_entry, entry_path, read_entry, write_entry
from dycoke_cli.cache.units import parse_size

DEFAULT_SIZE = "4GiB"
SIZE_ENV = "DYCOKE_VIDEO_CACHE_SIZE"
VERIFY_ENV = "DYCOKE_VIDEO_CACHE_VERIFY"

__all__ = ["DEFAULT_SIZE", "Hit", "Lookup", "VideoCache", "cache_folder"]


@dataclass
class Hit:
    features: object  # models.VideoFeatures, on the model's device
    stats: object  # stats.VideoStats: this read's figures, the original encode's saved time


@dataclass
class Lookup:
    """One find: the key (kept to store under on a miss), the hit if any, the seconds it took."""

    key: object  # key.EntryKey
    hit: Hit | None
    seconds: float


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


@dataclass
class VideoCache:
    """The cache as one process uses it. `notice` receives the one-line notes (the CLI prints them on
    stderr; the Python API's default raises them as RuntimeWarnings)."""

    folder: Path = field(default_factory=cache_folder)
    max_bytes: int = parse_size(DEFAULT_SIZE)
    verify: bool = False
    notice: Callable[[str], None] = _warn
    enabled: bool = True
    _blocked: set = field(default_factory=set)  # keys whose place a directory holds: never written
    _said: set = field(default_factory=set)  # topics of the notes given once per process

    @classmethod
    def from_environment(cls, notice: Callable[[str], None] | None = None) -> "VideoCache":
        """The cache as the environment sets it: DYCOKE_CACHE's folder, DYCOKE_VIDEO_CACHE_SIZE,
        DYCOKE_VIDEO_CACHE_VERIFY (what the Python API's cache=True uses)."""
        from dycoke_cli.env import flag

        verify = flag(VERIFY_ENV)
        return cls(max_bytes=parse_size(os.environ.get(SIZE_ENV) or DEFAULT_SIZE, SIZE_ENV), verify=verify,
                   notice=notice or _warn)

    def _once(self, topic: str, note: str) -> None:
        """A note about the cache's settings: said once per process, not once per video."""
        if topic not in self._said:
            self._said.add(topic)
            self.notice(note)

    def off(self, why: str) -> None:
        """Turn the cache off for the rest of the process, saying so once."""
        if self.enabled:
            self.enabled = False
            self.notice(f"video cache off for this run: {why}; answering without it")

    def find(self, lm, plan, content: dict | None = None) -> Lookup | None:
        """Look `plan`'s encoding by `lm` up; None when the cache is off (or just turned off). `content`:
        what the video's bytes are known by, when not by its file (key.entry_key)."""
        from dycoke_cli.cache.key import entry_key
        from dycoke_cli.errors import describe

        if not self.enabled:
            return None
        start = time.perf_counter()
        try:
            key = entry_key(lm, plan, self.verify, content)
            make_private(self.folder)
            hit = self._read(lm, plan, key)
        except OSError as exc:
            self.off(f"cannot use {self.folder} ({exc.strerror or type(exc).__name__})")
            return None
        except Exception as exc:  # noqa: BLE001 - the cache must never cost an answer
            self.off(describe(exc))
            return None
        seconds = time.perf_counter() - start
        if hit is not None:
            hit.stats.cache_read_s = seconds
        return Lookup(key=key, hit=hit, seconds=seconds)

    def _read(self, lm, plan, key) -> Hit | None:
        from dycoke_cli.cache.entry import features_from_entry

        path = entry_path(self.folder, key.digest)
        try:
            tensors, info = read_entry(path, key.digest, self.max_bytes)
            expected = lm.adapter.video_layout(plan.frames.timestamps, plan.frames.size)
            features, encode = features_from_entry(tensors, info, expected, lm.adapter.text_config.hidden_size,
                                                   lm.adapter.trailing_tokens)
        except FileNotFoundError:
            return None
        except (Unusable, OSError) as exc:
            reason = str(exc) if isinstance(exc, Unusable) else f"unreadable ({exc.strerror or type(exc).__name__})"
            if path.is_dir():
                self._blocked.add(key.digest)
            then = "left in place" if key.digest in self._blocked else "encoding again and replacing it"
            self.notice(f"video cache: the entry for {plan.video.name} ({key.digest[:12]}) is unusable, "
                        f"{reason}: {then}")
            return None
        touch(path)
        return Hit(features=_on_device(features, lm.device), stats=_stats_of(features, encode, plan))

    def store(self, lookup: Lookup | None, features, stats) -> float:
        """Keep a new encoding (models.VideoFeatures, its stats.VideoStats) under the key `lookup` found;
        returns the seconds it took. A failure to write turns the cache off, with one note."""
        from dycoke_cli.cache.entry import entry_from_features
        from dycoke_cli.errors import describe

        if lookup is None or not self.enabled or lookup.key.digest in self._blocked:
            return 0.0
        start = time.perf_counter()
        try:
            tensors, info = entry_from_features(features, stats)
            blob = encode_entry(lookup.key.digest, tensors, {**info, "label": lookup.key.label,
                                                             "description": lookup.key.description,
                                                             "written": time.time()})
            if len(blob) > self.max_bytes:
                self._once("cap", f"video cache: this encoding ({len(blob):,} bytes) is larger than the cache's cap "
                           f"({self.max_bytes:,} bytes, --cache-size): not kept")
            else:
                path = write_entry(self.folder, lookup.key.digest, blob)
                evict(self.folder, self.max_bytes, keep=path)
        except OSError as exc:
            self.off(f"cannot write to {self.folder} ({exc.strerror or type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - the cache must never cost an answer
            self.off(describe(exc))
        return time.perf_counter() - start


def _on_device(features, device: str):
    """The features with every tensor on the model's device."""
    return replace(features, tokens=features.tokens.to(device),
                   extras={name: x.to(device) for name, x in features.extras.items()},
                   trailing=None if features.trailing is None else features.trailing.to(device),
                   present=None if features.present is None else features.present.to(device))


def _stats_of(features, encode: dict, plan):
    """A hit's stats.VideoStats: the stored encode's frames and warnings, nothing spent decoding or
    encoding now, and what the original encode spent as the time saved."""
    from dycoke_cli.cache.entry import ENCODE_FIGURES
    from dycoke_cli.stats import VideoStats

    return VideoStats(frames=encode["frames"], frame_timestamps=encode["frame_timestamps"],
                      tokens_per_frame=features.tokens.shape[1], frames_per_group=features.group,
                      visual_tokens_before=plan.layout.total, encoder_layer=encode["encoder_layer"],
                      tower_patches=encode["tower_patches"], tower_patches_kept=encode["tower_patches_kept"],
                      warnings=encode["warnings"], video_source="cache",
                      cache_saved_s=sum(encode[key] for key in ENCODE_FIGURES))
