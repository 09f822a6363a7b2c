"""Model folders that are not what they seem (class 7): a chat template that explodes, runs forever or
writes pages, a config.json that names another family than its weights, a FIFO among the files. Each is
refused in one line (exit 2) before any weight loads, in bounded memory and time."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from clihelp import TINY, measured, one_line
from conftest import write_clip

GiB_KIB = 1024 * 1024


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("preflight") / "a.mp4", frames=8)


@pytest.fixture
def copy_of_tiny(tiny, tmp_path) -> Path:
    """random:tiny's files as a user's folder (the checks apply to folders we did not make)."""
    folder = tmp_path / "model"
    shutil.copytree(tiny.source.folder, folder)
    return folder


def refused(clip: Path, model: Path) -> str:
    started = time.monotonic()
    result, peak_kib = measured("ask", clip, "q?", *TINY, "--model", model, timeout=120)
    line = one_line(result)
    assert peak_kib < 1.5 * GiB_KIB, f"peak RSS {peak_kib // 1024} MiB"
    assert time.monotonic() - started < 60
    return line


def test_a_users_copy_of_a_good_model_passes_every_check(clip, copy_of_tiny):
    result, _ = measured("ask", clip, "q?", *TINY, "--model", copy_of_tiny, "--quiet", timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("template, needle", [
    ("{{ 'x' * 10**10 }}", "needs more than 1024 MiB to render a two-line conversation"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
     "needs more than 1024 MiB to render"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "takes more than 5 s to render a two-line conversation"),
    ("{% for i in range(30000) %}many words {% endfor %}", "writes 330,000 characters around a two-line conversation"),
])
def test_a_template_that_runs_away_is_refused(clip, copy_of_tiny, template, needle):
    (copy_of_tiny / "chat_template.jinja").write_text(template)
    line = refused(clip, copy_of_tiny)
    assert line.startswith(f"error: the chat template of '{copy_of_tiny}' ") and needle in line, line


def test_a_config_of_another_family_over_these_weights_is_refused(clip, tiny, tmp_path):
    """Qwen3-VL's config, tokenizer and template beside random:tiny's LLaVA-OneVision weights."""
    from dycoke_cli.models.source import resolve

    folder = tmp_path / "mixed"
    shutil.copytree(resolve("random:tiny-qwen3-vl").folder, folder)
    shutil.copy(tiny.source.folder / "model.safetensors", folder / "model.safetensors")
    line = refused(clip, folder)
    assert line.startswith(f"error: the weights of '{folder}' do not match its config.json (qwen3_vl): ")
    assert "the config and the weights come from different models" in line
    # The same weights under a config that says a bigger model of their own family are refused too.
    config = json.loads((tiny.source.folder / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 40
    bigger = tmp_path / "bigger"
    shutil.copytree(tiny.source.folder, bigger)
    (bigger / "config.json").write_text(json.dumps(config))  # 40 layers, 4 layer types: inconsistent
    assert refused(clip, bigger).startswith(f"error: cannot read the configuration of '{bigger}': ")
    config["text_config"].pop("layer_types", None)  # one per layer: let transformers derive them
    (bigger / "config.json").write_text(json.dumps(config))
    assert "do not match its config.json (llava_onevision)" in refused(clip, bigger)


def test_a_fifo_or_an_oversized_config_among_the_files_is_refused(clip, copy_of_tiny):
    (copy_of_tiny / "tokenizer.json").unlink()
    os.mkfifo(copy_of_tiny / "tokenizer.json")  # would block the tokenizer forever
    line = refused(clip, copy_of_tiny)
    assert line == f"error: model '{copy_of_tiny}': model file '{copy_of_tiny / 'tokenizer.json'}' is not a regular file"
    (copy_of_tiny / "tokenizer.json").unlink()
    with open(copy_of_tiny / "config.json", "ab") as f:
        f.truncate(17 << 20)  # 17 MiB (sparse): past the 16 MiB a config.json may hold
    assert "more than the 16 MiB" in refused(clip, copy_of_tiny)
