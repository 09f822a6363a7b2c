"""Shared fixtures: an offline Hub, a private model cache, the tiny random model, small clips.

Everything is built at test time: the tiny model through the product's own `random:tiny` spec
(saved with save_pretrained and loaded back with from_pretrained), videos with PyAV.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # the suite never touches the network


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Random models are materialised once per test session into a private folder."""
    root = tmp_path_factory.mktemp("dycoke-cache")
    (root / "random").mkdir()
    os.environ["DYCOKE_CACHE"] = str(root)
    yield root


@pytest.fixture(autouse=True)
def _own_video_cache(_private_cache, tmp_path_factory, monkeypatch):
    """Each test has a DYCOKE_CACHE of its own, holding the session's random models (linked): its video
    cache starts empty, so no test reads the encodings of another. It lives outside the test's
    tmp_path, which tests may expect to hold only what the command wrote."""
    home = tmp_path_factory.mktemp("dycoke-cache")
    (home / "random").symlink_to(_private_cache / "random", target_is_directory=True)
    monkeypatch.setenv("DYCOKE_CACHE", str(home))


def write_video(path: Path, images, rate: int = 8) -> Path:
    """An H.264 (yuv420p) clip of `images`, (H, W, 3) uint8 arrays of one size, at `rate` fps."""
    import av

    images = iter(images)
    first = next(images)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        for img in itertools.chain([first], images):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_clip(path: Path, frames: int = 16, size: tuple[int, int] = (96, 64), rate: int = 8) -> Path:
    """A small H.264 clip whose frames differ (a moving bar over a changing background)."""
    width, height = size

    def image(i: int) -> np.ndarray:
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 1] = (i * 37) % 256
        x = (i * 7) % max(1, width - 12)
        img[:, x:x + 12, 0] = 255
        return img

    return write_video(path, (image(i) for i in range(frames)), rate)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A test module's own folder holding two small clips, a.mp4 (8 frames) and b.mp4 (10 frames)."""
    root = tmp_path_factory.mktemp("clips")
    write_clip(root / "a.mp4", frames=8)
    write_clip(root / "b.mp4", frames=10)
    return root


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory) -> Path:
    """40 frames: enough for a 32-frame uniform sample."""
    return write_clip(tmp_path_factory.mktemp("clips") / "long.mp4", frames=40)


_FAMILIES: dict = {}


@pytest.fixture(scope="session")
def family(_private_cache):
    """name -> random:<name> (tiny-qwen2.5-vl, tiny-smolvlm2, ...) in float32 on the CPU, loaded once."""
    from dycoke_cli.models import load_model

    def get(name: str):
        if name not in _FAMILIES:
            _FAMILIES[name] = load_model(f"random:{name}", device="cpu", dtype="float32", quant="none")
        return _FAMILIES[name]

    return get


@pytest.fixture(scope="session")
def tiny(_private_cache):
    """random:tiny in float32 on the CPU (exact comparisons need fp32)."""
    from dycoke_cli.models import load_model

    return load_model("random:tiny", device="cpu", dtype="float32", quant="none")


@pytest.fixture
def tiny_loaded(tiny, monkeypatch):
    """`dycoke run` gets the session's tiny model instead of loading one."""
    loads = []
    monkeypatch.setattr("dycoke_cli.commands.run.load", lambda *a, **k: loads.append(a) or tiny)
    return loads


@pytest.fixture(scope="session")
def wide_clip(tmp_path_factory):
    """192x128 at 8 fps: Qwen's 32 px (Qwen3) and 28 px (Qwen2.5) grids give several tokens per group."""
    return write_clip(tmp_path_factory.mktemp("clips") / "wide.mp4", frames=16, size=(192, 128), rate=8)


def llava_prompt(lm, question: str, n_video: int) -> tuple[list[int], int]:
    """A LLaVA-OneVision prompt built by hand from the checkpoint's chat template, independent of the
    adapter: the one `<video>` token expanded to n_video placeholders. Returns (ids, video start)."""
    tokenizer = lm.adapter.tokenizer
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, chat_template=lm.adapter.chat_template,
                                         add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    video = lm.model.config.video_token_index
    at = ids.index(video)
    return ids[:at] + [video] * n_video + ids[at + 1:], at


def load_script(relative: str, name: str):
    """A script under benchmarks/ as a module (they are not part of the package); registered in
    sys.modules first, since dataclasses look their module up there."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
