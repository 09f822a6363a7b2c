"""Pictures of a selection (`--save-kept`): a mosaic of the sampled frames, each frame's dropped cells
greyed, and optionally a heat overlay of how often each kept token was attended while decoding.

Drawn with Pillow from plain arrays (frames, boxes, keep masks, shares), so it knows nothing of model
families or methods: a tile is a picture, the rectangles its tokens cover and which of them were kept.
That is as true of a selection made inside the vision tower (cells picked at an encoder layer) as of
one made before prefill, so any stage that can say "these boxes, these kept" can be drawn.

Pixels are assigned to a box by their centre (pixel x belongs to [x0, x1) when x0 <= x + 0.5 < x1, in
thumbnail pixels), so neighbouring boxes never share or skip a pixel. A dropped cell, and a pixel no
token covers (LLaVA-OneVision's border the patch grid misses), is drawn exactly grey (R = G = B, from
its luminance); a kept one keeps its colours, or with a heat overlay is blended with the colour of
its share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


COLUMNS = 8  # tiles per row
MARGIN = 6  # pixels around and between tiles
TITLE_H = 34  # two lines of text above the tiles
CAPTION_H = 14  # one line under each tile
LEGEND_H = 26  # the heat scale under the tiles
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
# The heat ramp, share -> colour: blue (never attended) through yellow to red (every step).
RAMP = ((0.0, (40, 60, 220)), (0.5, (240, 220, 40)), (1.0, (220, 30, 30)))
HEAT_WEIGHT = 3  # of 5: how much of a kept pixel the heat colour takes


@dataclass
class Tile:
    """One frame of the mosaic.

    picture: (h, w, 3) uint8, the frame as drawn (a thumbnail); scale: (x, y) thumbnail pixels per
    frame pixel. boxes: (T, 4) x0, y0, x1, y1 in frame pixels; kept: (T,) bool. heat: (T,) share of
    decode steps each token was attended (read for kept tokens only), or None. caption: under the tile.
    """

    picture: np.ndarray
    scale: tuple[float, float]
    boxes: np.ndarray
    kept: np.ndarray
    caption: str
    heat: np.ndarray | None = None


def require_pillow() -> None:
    """Fail before any work when --save-kept cannot be honoured."""
    from dycoke_cli.render.plots import require

    require("PIL", "--save-kept", "pillow", "Pillow")


def cell_map(boxes: np.ndarray, scale: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """(h, w) int64: the token whose box holds each thumbnail pixel's centre, -1 where none does."""
    height, width = shape
    out = np.full((height, width), -1, dtype=np.int64)
    for token, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.float64)):
        left, right = _pixel_span(x0 * scale[0], x1 * scale[0], width)
        top, bottom = _pixel_span(y0 * scale[1], y1 * scale[1], height)
        out[top:bottom, left:right] = token
    return out


def _pixel_span(start: float, end: float, limit: int) -> tuple[int, int]:
    """The pixels whose centres lie in [start, end): from ceil(start - 0.5) up to ceil(end - 0.5)."""
    return (min(limit, max(0, int(np.ceil(start - 0.5)))), min(limit, max(0, int(np.ceil(end - 0.5)))))


def grey(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> the same shape, R = G = B, lighter and flatter than the luminance (so a greyed
    cell reads as 'not seen' next to a dark kept one)."""
    rgb = pixels.astype(np.int32)
    luma = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) // 1000
    value = (160 + luma * 3 // 10).astype(np.uint8)
    return np.repeat(value[..., None], 3, axis=-1)


def ramp(share: np.ndarray) -> np.ndarray:
    """(N,) shares in [0, 1] -> (N, 3) uint8 colours of the heat scale (piecewise linear through RAMP)."""
    share = np.clip(np.nan_to_num(np.asarray(share, dtype=np.float64)), 0.0, 1.0)
    stops = np.array([s for s, _ in RAMP])
    colours = np.array([c for _, c in RAMP], dtype=np.float64)
    return np.stack([np.interp(share, stops, colours[:, i]) for i in range(3)], axis=-1).round().astype(np.uint8)


def paint(tile: Tile) -> np.ndarray:
    """The tile's picture with its selection drawn: (h, w, 3) uint8."""
    picture = np.asarray(tile.picture, dtype=np.uint8)
    cells = cell_map(tile.boxes, tile.scale, picture.shape[:2])
    kept = np.asarray(tile.kept, dtype=bool)
    seen = np.zeros(cells.shape, dtype=bool)
    inside = cells >= 0
    seen[inside] = kept[cells[inside]]
    out = grey(picture)
    out[seen] = picture[seen]
    if tile.heat is not None:
        colour = ramp(np.asarray(tile.heat)[cells[seen]])  # (n, 3)
        mixed = (picture[seen].astype(np.int32) * (5 - HEAT_WEIGHT) + colour.astype(np.int32) * HEAT_WEIGHT) // 5
        out[seen] = mixed.astype(np.uint8)
    return out


def tile_origins(count: int, size: tuple[int, int]) -> list[tuple[int, int]]:
    """(x, y) of each tile's top-left pixel in the mosaic; `size` = (width, height) of one tile."""
    width, height = size
    return [(MARGIN + (i % COLUMNS) * (width + MARGIN), TITLE_H + (i // COLUMNS) * (height + CAPTION_H + MARGIN))
            for i in range(count)]


def mosaic(tiles: list[Tile], title: list[str], heat_label: str | None = None):
    """A PIL image: the title lines, the painted tiles in rows of COLUMNS with their captions, and
    under them the heat scale when `heat_label` is given. Every tile has the first tile's size."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    height, width = tiles[0].picture.shape[:2]
    origins = tile_origins(len(tiles), (width, height))
    rows = -(-len(tiles) // COLUMNS)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(probe.textlength(line, font=font) for line in title + ([heat_label] if heat_label else []))
    canvas_w = max(MARGIN + min(len(tiles), COLUMNS) * (width + MARGIN), int(text_width) + 2 * MARGIN + 1)
    canvas_h = TITLE_H + rows * (height + CAPTION_H + MARGIN) + (LEGEND_H if heat_label else 0)
    image = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(title[:2]):
        draw.text((MARGIN, 4 + 14 * i), line, fill=TEXT, font=font)
    for tile, (x, y) in zip(tiles, origins):
        image.paste(Image.fromarray(paint(tile)), (x, y))
        draw.text((x, y + height + 1), tile.caption, fill=TEXT, font=font)
    if heat_label:
        top = canvas_h - LEGEND_H + 4
        bar = ramp(np.linspace(0.0, 1.0, 120))  # (120, 3)
        image.paste(Image.fromarray(np.repeat(bar[None], 8, axis=0)), (MARGIN, top))
        draw.text((MARGIN + 126, top - 2), heat_label, fill=TEXT, font=font)
    return image


def save_png(image, path) -> None:
    """Write atomically (outputs.replacing: a fresh temporary file renamed), so an interrupted run never
    leaves half a PNG, and a link planted beside the picture is never written through."""
    from dycoke_cli.outputs import replacing

    with replacing(path) as f:
        image.save(f, format="PNG")
