"""Shared fixtures: an offline Hub, a private model cache, the tiny random model, small clips.

Everything is built at test time: the tiny model through the product's own `random:tiny` spec
(saved with save_pretrained and loaded back with from_pretrained), videos with PyAV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # the suite never touches the network


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Random models are materialised once per test session into a private folder."""
    os.environ["DYCOKE_CACHE"] = str(tmp_path_factory.mktemp("dycoke-cache"))
    yield


def write_clip(path: Path, frames: int = 16, size: tuple[int, int] = (96, 64), rate: int = 8) -> Path:
    """A small H.264 clip whose frames differ (a moving bar over a changing background)."""
    import av

    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 1] = (i * 37) % 256
            x = (i * 7) % max(1, width - 12)
            img[:, x:x + 12, 0] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


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


@pytest.fixture(scope="session")
def tiny(_private_cache):
    """random:tiny in float32 on the CPU (exact comparisons need fp32)."""
    from dycoke_cli.models import load_model

    return load_model("random:tiny", device="cpu", dtype="float32", quant="none")


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
