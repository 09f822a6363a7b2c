"""Pictures of a selection (--save-kept): the greyed cells of the PNG, read back, are exactly the
dropped tokens, on every family's geometry, computed here from each family's documented rule:

- LLaVA-OneVision: the frame squashed to the tower's square S; its n = S // patch patches a side
  (27 of 14 px at 384: the last S - 14n pixels in none) pooled to the grid, a cell n*patch/side px;
- Qwen2.5-VL / Qwen3-VL: the frame resized to multiples of patch x merge, a token one 2 x 2 merge
  group: the grid tiles the whole frame evenly;
- SmolVLM2: the frame squashed to the max_image_size square, a token one pixel-shuffle group: the
  grid tiles the whole frame evenly.

The clip is saturated everywhere (no pixel is grey), so a grey pixel (R = G = B) can only be drawn.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_video
from dycoke_cli.engine import Session, encode
from dycoke_cli.kept import THUMBNAIL, KeptPictures
from dycoke_cli.plan import plan_video
from dycoke_cli.render.kept import CAPTION_H, tile_origins
from dycoke_cli.settings import Generation
from dycoke_cli.video import SamplingRequest, probe_video

FAMILIES = ["tiny", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-smolvlm2"]


def saturated_clip(path: Path, frames: int = 8, size: tuple[int, int] = (192, 128)) -> Path:
    """Strong red with green and blue ramps across and down, a moving blue block: never grey."""
    width, height = size
    x, y = np.arange(width)[None, :], np.arange(height)[:, None]

    def image(i: int) -> np.ndarray:
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 0] = 230
        img[..., 1] = 30 + 120 * x // width
        img[..., 2] = 20 + 100 * y // height
        left = (i * 19) % (width - 32)
        img[20:60, left:left + 32] = (40, 60, 230)
        return img

    return write_video(path, (image(i) for i in range(frames)))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return saturated_clip(tmp_path_factory.mktemp("kept") / "sat.mp4")


def expected_boxes(lm, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(h*w, 4) x0, y0, x1, y1 in frame pixels, from each family's rule (module docstring)."""
    width, height = size
    rows, cols = grid
    if lm.adapter.family == "LLaVA-OneVision":
        vision = lm.model.config.vision_config
        side = vision.image_size
        cell = (side // vision.patch_size) * vision.patch_size / cols  # 27 * 14 / 14 = 27 px at 384
        fx, fy = width / side, height / side
        return np.array([[c * cell * fx, r * cell * fy, (c + 1) * cell * fx, (r + 1) * cell * fy]
                         for r in range(rows) for c in range(cols)])
    return np.array([[c * width / cols, r * height / rows, (c + 1) * width / cols, (r + 1) * height / rows]
                     for r in range(rows) for c in range(cols)])


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def tile_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    factor = THUMBNAIL / max(width, height)
    return round(width * factor), round(height * factor)


def check_picture(png: np.ndarray, lm, tiles: list[tuple[tuple[int, int], np.ndarray]], size) -> int:
    """Each tile: (grid, kept (h*w,) bool) in mosaic order. Every pixel inside a cell (a pixel in from its
    edges, so a cell a pixel off is caught) is grey exactly when its token was dropped. Returns the cells
    checked."""
    thumb = tile_size(size)
    sx, sy = thumb[0] / size[0], thumb[1] / size[1]
    checked = 0
    for (x0, y0), (grid, kept) in zip(tile_origins(len(tiles), thumb), tiles):
        for (bx0, by0, bx1, by1), keep in zip(expected_boxes(lm, grid, size), kept):
            left, right = int(np.ceil(bx0 * sx)) + 1, int(np.floor(bx1 * sx)) - 1
            top, bottom = int(np.ceil(by0 * sy)) + 1, int(np.floor(by1 * sy)) - 1
            assert right > left and bottom > top  # every cell has an inside at this size
            cell = png[y0 + top:y0 + bottom, x0 + left:x0 + right]  # (h, w, 3)
            grey = (cell[..., 0] == cell[..., 1]) & (cell[..., 1] == cell[..., 2])
            assert (grey.all() if not keep else not grey.any()), (grid, (bx0, by0), keep)
            checked += 1
        caption = png[y0 + thumb[1]:y0 + thumb[1] + CAPTION_H, x0:x0 + thumb[0]]
        assert (caption < 128).any()  # a caption is written under the tile
    return checked


def tiles_of(features, kept: torch.Tensor) -> list[tuple[tuple[int, int], np.ndarray]]:
    """(grid, kept (h*w,) bool) per encoded frame, from a (F*T,) bool mask over the flat tokens."""
    per_frame = features.grid[0] * features.grid[1]
    return [(features.grid, kept[f * per_frame:(f + 1) * per_frame].cpu().numpy())
            for f in range(features.tokens.shape[0])]


def mask_of(features, keep: torch.Tensor) -> torch.Tensor:
    """(F*T,) bool: True at the flat indices `keep`."""
    kept = torch.zeros(features.tokens.shape[0] * features.tokens.shape[1], dtype=torch.bool)
    kept[keep.cpu()] = True
    return kept


def session_for(lm, clip: Path, spec: str, frames: int = 4):
    plan = plan_video(probe_video(clip), SamplingRequest(frames=frames), spec, lm.adapter)
    session = Session(lm, encode(lm, plan), plan)
    return plan, session, session.ask("What happens?", Generation(max_new_tokens=4, min_new_tokens=4))


@pytest.mark.parametrize("name", FAMILIES)
def test_grey_cells_are_exactly_the_dropped_tokens_on_every_family(family, clip, tmp_path, name):
    lm = family(name)
    plan, session, answer = session_for(lm, clip, "random:budget=0.4")
    written = KeptPictures(tmp_path).save(plan, session, answer, "random:budget=0.4", "q1")
    assert written == [tmp_path / "random_budget=0.4" / "q1.png"]
    features = session.video.features
    kept = mask_of(features, session.kept.keep)
    assert 0 < int(kept.sum()) < len(kept)
    assert check_picture(read_png(written[0]), lm, tiles_of(features, kept), plan.sampled.size) == len(kept)


@pytest.mark.parametrize("name", FAMILIES)
def test_cells_a_selection_inside_the_tower_dropped_are_grey_on_every_family(family, clip, tmp_path, name):
    """stage=encoder: the tower drops cells at its layer 1 and its later layers never see them; the picture
    greys exactly the cells the encoding lacks (VideoFeatures.present), read from the encoding itself."""
    lm = family(name)
    spec = "evs:stage=encoder,encoder_layer=1,budget=0.4"
    plan, session, answer = session_for(lm, clip, spec)
    written = KeptPictures(tmp_path).save(plan, session, answer, spec, "e")
    features = session.video.features
    present = features.present.cpu()
    assert 0 < int(present.sum()) < len(present)
    assert check_picture(read_png(written[0]), lm, tiles_of(features, present), plan.sampled.size) == len(present)


def test_links_planted_beside_a_picture_are_never_written_through(family, clip, tmp_path):
    """A link where the picture goes, or where a temporary file of a predictable name would go, leaves
    the file it points at untouched; the picture is a file of its own."""
    lm = family("tiny")
    plan, session, answer = session_for(lm, clip, "evs:budget=0.4")
    folder = tmp_path / "kept" / "evs"
    folder.mkdir(parents=True)
    victims = [tmp_path / "victim1", tmp_path / "victim2"]
    for victim, name in zip(victims, ("q1.png", ".q1.png.tmp")):
        victim.write_text("keep me")
        (folder / name).symlink_to(victim)
    written = KeptPictures(tmp_path / "kept").save(plan, session, answer, "evs", "q1")
    assert [victim.read_text() for victim in victims] == ["keep me", "keep me"]
    assert not written[0].is_symlink() and written[0].read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in folder.iterdir()) == [".q1.png.tmp", "q1.png"]  # no temporary left


def test_frames_a_method_does_not_encode_are_wholly_grey(family, clip, tmp_path):
    lm = family("tiny")
    plan, session, answer = session_for(lm, clip, "uniform:budget=0.5")
    assert plan.subset == (1, 3)  # 2 of 4 frames: the centres of two segments
    png = read_png(KeptPictures(tmp_path).save(plan, session, answer, "uniform", "u")[0])
    grid = session.video.features.grid
    per_frame = grid[0] * grid[1]
    tiles = [(grid, np.full(per_frame, keep)) for keep in (False, True, False, True)]
    check_picture(png, lm, tiles, plan.sampled.size)


def test_pixels_no_token_covers_are_grey(family, clip, tmp_path):
    lm = family("tiny")  # 384 px square, 27 patches of 14: the last 6/384 of each side is in no patch
    plan, session, answer = session_for(lm, clip, "none")
    png = read_png(KeptPictures(tmp_path).save(plan, session, answer, "none", "n")[0])
    (x0, y0), = tile_origins(1, tile_size(plan.sampled.size))
    width, height = tile_size(plan.sampled.size)
    edge = png[y0 + height // 2, x0 + width - 1]
    inside = png[y0 + height // 2, x0 + width - 4]
    assert edge[0] == edge[1] == edge[2] and not inside[0] == inside[1] == inside[2]


def test_dp_heat_is_the_share_of_decode_steps_each_token_was_attended(family, clip, tmp_path):
    lm = family("tiny")
    plan, session, answer = session_for(lm, clip, "dycoke:p=0.5,gate=released")
    hook = answer.hook
    visual = hook.context.visual.tolist()  # kept row j sits at prompt position visual[j]
    steps = hook.kept_visual
    assert len(steps) == 3 and any(step is not None for step in steps)
    by_hand = [sum(1 for step in steps if step is None or position in step.tolist()) / len(steps)
               for position in visual]
    assert hook.visual_share().tolist() == pytest.approx(by_hand)
    written = KeptPictures(tmp_path).save(plan, session, answer, "dycoke", "d")
    assert [p.name for p in written] == ["d.png", "d.attention.png"]
    features = session.video.features
    frames, per_frame = features.tokens.shape[:2]
    heat = read_png(written[1])
    # Dropped tokens grey, every kept one coloured.
    check_picture(heat, lm, tiles_of(features, mask_of(features, session.kept.keep)), plan.sampled.size)
    # A token attended at every step is drawn redder than one never attended (blue end of the scale).
    share = dict(zip(session.kept.keep.tolist(), by_hand))
    thumb = tile_size(plan.sampled.size)
    boxes = expected_boxes(lm, features.grid, plan.sampled.size)
    origins = tile_origins(frames, thumb)
    sx, sy = thumb[0] / plan.sampled.size[0], thumb[1] / plan.sampled.size[1]

    def colour(token: int) -> np.ndarray:
        f, t = divmod(token, per_frame)
        bx0, by0, bx1, by1 = boxes[t]
        x0, y0 = origins[f]
        return heat[y0 + int((by0 + by1) / 2 * sy), x0 + int((bx0 + bx1) / 2 * sx)]

    hot = [t for t, s in share.items() if s == 1.0]
    cold = [t for t, s in share.items() if s == 0.0]
    assert hot and cold
    assert min(colour(t)[0] - colour(t)[2] for t in hot) > max(colour(t)[0] - colour(t)[2] for t in cold)


def test_ask_run_and_profile_write_the_pictures_of_the_selection(clip, tmp_path, family):
    """The entry points, in real processes: ask names each question, run each record under each setting,
    profile each setting by the video's name; ask's picture equals the one drawn in this process."""
    tiny = ["--model", "random:tiny", "--device", "cpu", "--dtype", "float32", "--frames", "4",
            "--max-new-tokens", "4"]
    ask = [sys.executable, "-m", "dycoke_cli", "ask", str(clip), "What happens?", "Why?", *tiny, "-q",
           "-c", "evs:budget=0.3", "--save-kept", str(tmp_path / "ask")]
    assert subprocess.run(ask, capture_output=True, timeout=180).returncode == 0
    assert sorted(p.name for p in (tmp_path / "ask" / "evs_budget=0.3").iterdir()) == ["q1.png", "q2.png"]
    lm = family("tiny")
    plan, session, answer = session_for(lm, clip, "evs:budget=0.3")
    here = KeptPictures(tmp_path / "here").save(plan, session, answer, "evs:budget=0.3", "q1")[0]
    assert np.array_equal(read_png(here), read_png(tmp_path / "ask" / "evs_budget=0.3" / "q1.png"))
    # Over several videos, each video's pictures are named after it.
    other = tmp_path / "other.mp4"
    other.write_bytes(clip.read_bytes())
    ask = [*ask[:4], str(other), *ask[4:-1], str(tmp_path / "both")]
    assert subprocess.run(ask, capture_output=True, timeout=180).returncode == 0
    assert sorted(p.name for p in (tmp_path / "both" / "evs_budget=0.3").iterdir()) == [
        "other.mp4.q1.png", "other.mp4.q2.png", "sat.mp4.q1.png", "sat.mp4.q2.png"]
    assert np.array_equal(read_png(here), read_png(tmp_path / "both" / "evs_budget=0.3" / "sat.mp4.q1.png"))

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"id": i, "video": str(clip), "question": q}) + "\n"
                                 for i, q in [("a/../b", "One?"), (7, "Two?")]))
    run = [sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(tmp_path / "ans.jsonl"), *tiny,
           "-c", "none", "-c", "dycoke", "--save-kept", str(tmp_path / "run")]
    assert subprocess.run(run, capture_output=True, timeout=180).returncode == 0
    names = {p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*.png")}
    odd = next(n for n in names if n.startswith("none/a_.._b-")).split("/")[1].removesuffix(".png")
    assert names == {f"none/{odd}.png", "none/7.png", f"dycoke/{odd}.png", f"dycoke/{odd}.attention.png",
                     "dycoke/7.png", "dycoke/7.attention.png"}

    profile = [sys.executable, "-m", "dycoke_cli", "profile", str(clip), *tiny, "-n", "1", "-c", "none",
               "-c", "uniform", "--save-kept", str(tmp_path / "prof")]
    assert subprocess.run(profile, capture_output=True, timeout=180).returncode == 0
    names = {p.relative_to(tmp_path / "prof").as_posix() for p in (tmp_path / "prof").rglob("*.png")}
    assert names == {"none/sat.png", "uniform/sat.png"}


def test_pictures_of_videos_that_share_a_file_name_are_told_apart_by_their_place():
    from dycoke_cli.commands.ask import picture_name

    one, two, three = Path("x/clip.mp4"), Path("y/clip.mp4"), Path("y/b.mp4")
    assert picture_name([one], one, 1) == "q1"
    assert [picture_name([one, two, three], v, 2) for v in (one, two, three)] == [
        "1.clip.mp4.q2", "2.clip.mp4.q2", "b.mp4.q2"]


def test_save_kept_without_pillow_is_one_line_and_exit_2_before_any_work(clip, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dycoke_cli.cli import app

    monkeypatch.setitem(sys.modules, "PIL", None)
    result = CliRunner().invoke(app, ["ask", str(clip), "What happens?", "--model", "random:tiny",
                                      "--save-kept", str(tmp_path / "kept")], catch_exceptions=False)
    assert result.exit_code == 2 and not (tmp_path / "kept").exists()
    assert " ".join(result.stderr.split()) == ("error: --save-kept needs Pillow, which is not installed: pip install "
                                               "pillow (or dycoke's 'plot' extra)")
