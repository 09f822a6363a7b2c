"""What a setting kept of each sampled frame, and the pictures of it that `--save-kept` writes.

A selection is flat indices into the encoded (F, T) tokens (engine.Session.kept.keep); to draw it,
each encoded frame (a temporal group for Qwen: drawn as its first frame) becomes a keep mask over its
T tokens, each token a rectangle of the frame that the family adapter names (`cell_boxes`), and a
sampled frame a method did not encode at all (`uniform`) a frame with nothing kept. Decoded frames are
not kept after encoding, so the pictures decode the sampled frames again, one small thumbnail each.

Files: DIR/<setting>/<name>.png, and DIR/<setting>/<name>.attention.png where the method chose among
the visual tokens while decoding (DyCoke's DP): the share of decode steps each kept token was attended.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

THUMBNAIL = 160  # pixels on a thumbnail's longer side


@dataclass(frozen=True)
class FrameKeep:
    """One sampled frame as the model saw it under a setting.

    position: index among the sampled frames (its picture); time: seconds; boxes: (T, 4) x0, y0, x1, y1
    in the frame's pixels; kept: (T,) bool; heat: (T,) share of decode steps attended, or None.
    """

    position: int
    time: float
    boxes: np.ndarray
    kept: np.ndarray
    heat: np.ndarray | None = None


def frame_keeps(adapter, plan, features, keep, share=None) -> list[FrameKeep]:
    """Per sampled frame, in time order, what `keep` ((N,) flat indices into the F*T encoded tokens of
    `features`, the encoding of `plan`) kept; `share` (N,) aligned with `keep`: each kept token's share
    of decode steps attended (None: no heat)."""
    frames, per_frame = features.tokens.shape[:2]
    size = plan.sampled.size
    boxes = adapter.cell_boxes(features.grid, size).numpy()
    kept = np.zeros(frames * per_frame, dtype=bool)
    keep = np.asarray(keep.cpu() if hasattr(keep, "cpu") else keep, dtype=np.int64)
    kept[keep] = True
    heat = None
    if share is not None:
        heat = np.full(frames * per_frame, np.nan)
        heat[keep] = np.asarray(share.cpu() if hasattr(share, "cpu") else share, dtype=np.float64)
    encoded = list(plan.subset) if plan.subset is not None else list(range(plan.sampled.count))
    out = [FrameKeep(encoded[f * features.group], float(features.times[f]), boxes,
                     kept[f * per_frame:(f + 1) * per_frame],
                     None if heat is None else heat[f * per_frame:(f + 1) * per_frame])
           for f in range(frames)]
    if plan.subset is not None:  # sampled frames the method never encoded: nothing of them was kept
        whole = adapter.cell_boxes(plan.layout.grid, size).numpy()
        times, encoded = plan.sampled.timestamps, set(plan.subset)
        out += [FrameKeep(p, float(times[p]), whole, np.zeros(len(whole), dtype=bool))
                for p in range(plan.sampled.count) if p not in encoded]
    return sorted(out, key=lambda k: (k.time, k.position))


def thumbnails(frame_plan, longest: int = THUMBNAIL) -> tuple[list[np.ndarray], tuple[float, float]]:
    """Every frame of a video.FramePlan decoded again, a chunk at a time, each shrunk (or grown) at once
    so its longer side is `longest` pixels: (one (h, w, 3) uint8 per frame, (x, y) thumbnail pixels per
    frame pixel)."""
    from PIL import Image

    from dycoke_cli.video import decode_chunks

    width, height = frame_plan.size
    factor = longest / max(width, height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    pictures: dict[int, np.ndarray] = {}
    for start, frames in decode_chunks(frame_plan, 16):
        for i, pixels in enumerate(frames.pixels):
            pictures[start + i] = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    blank = np.full((size[1], size[0], 3), 128, dtype=np.uint8)  # a frame that failed to decode
    return [pictures.get(p, blank) for p in range(frame_plan.count)], (size[0] / width, size[1] / height)


def record_name(record_id) -> str:
    """A record's id as a file name (ids are any string or integer; two ids never share a name)."""
    from dycoke_cli.outputs import file_tag

    return file_tag(str(record_id), unique=True)


class KeptPictures:
    """Writes the pictures of `--save-kept DIR`, decoding each video's sampled frames once (the
    thumbnails of the last video are kept, which is all a run grouped by video needs)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._video: tuple | None = None
        self._thumbnails: tuple[list[np.ndarray], tuple[float, float]] | None = None

    def save(self, plan, session, answer, setting: str, name) -> list[Path]:
        """The pictures of one answer under one setting (plan.Plan, engine.Session and its Answer);
        `name` is a record id or any text. Returns the files written."""
        from dycoke_cli.outputs import file_tag
        from dycoke_cli.render import kept as draw

        pictures, scale = self._frames(plan)
        folder = self.folder / file_tag(setting)
        folder.mkdir(parents=True, exist_ok=True)
        stem = record_name(name)
        keep = session.kept.keep
        total = session.video.sampled.total
        title = [f"{Path(str(plan.video)).name}  {setting}",
                 f"kept {keep.numel():,} of {total:,} visual tokens ({100 * keep.numel() / max(1, total):.1f}%); "
                 "grey: dropped"]
        written = []
        keeps = frame_keeps(session.lm.adapter, plan, session.video.features, keep)
        image = draw.mosaic(_tiles(keeps, pictures, scale), title)
        written.append(folder / f"{stem}.png")
        draw.save_png(image, written[-1])
        share = answer.hook.visual_share() if answer.hook is not None else None
        if share is not None:
            steps = len(answer.hook.attended)
            keeps = frame_keeps(session.lm.adapter, plan, session.video.features, keep, share)
            label = f"share of the {steps} decode step(s) each kept token was attended: 0% to 100%"
            image = draw.mosaic(_tiles(keeps, pictures, scale), title, heat_label=label)
            written.append(folder / f"{stem}.attention.png")
            draw.save_png(image, written[-1])
        return written

    def _frames(self, plan):
        key = (str(plan.video), tuple(plan.sampled.wanted))
        if key != self._video:
            self._thumbnails = None  # the last video's go first
            self._thumbnails = thumbnails(plan.sampled)
            self._video = key
        return self._thumbnails


def _tiles(keeps: list[FrameKeep], pictures: list[np.ndarray], scale: tuple[float, float]) -> list:
    from dycoke_cli.render.kept import Tile

    return [Tile(picture=pictures[k.position], scale=scale, boxes=k.boxes, kept=k.kept, heat=k.heat,
                 caption=f"{k.time:.2f}s {int(k.kept.sum())}/{len(k.kept)}") for k in keeps]
