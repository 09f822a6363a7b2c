"""Model resolution and loading: local folders, random specs, unsupported families, offline Hub."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from dycoke_cli.cli import app
from dycoke_cli.errors import ModelError
from dycoke_cli.models.random_specs import materialise, random_spec
from dycoke_cli.models.source import resolve

runner = CliRunner()


def test_random_builds_are_identical(tmp_path):
    first = materialise(random_spec("random:tiny"), tmp_path / "a")
    second = materialise(random_spec("random:tiny"), tmp_path / "b")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()


def test_random_spec_real_dimensions():
    spec = random_spec("random:llava-onevision-7b")
    assert (spec.text["hidden_size"], spec.text["num_hidden_layers"], spec.text["intermediate_size"]) == (3584, 28, 18944)
    assert (spec.vision["image_size"], spec.vision["patch_size"], spec.vision["hidden_size"]) == (384, 14, 1152)


def test_local_folder_is_loaded_as_is(tiny, tmp_path, clip):
    folder = shutil.copytree(tiny.source.folder, tmp_path / "my-checkpoint")
    source = resolve(str(folder))
    assert source.folder == folder and not source.random_weights
    result = runner.invoke(app, ["ask", str(clip), "What happens?", "--model", str(folder), "--device", "cpu",
                                 "--dtype", "float32", "--frames", "4", "--max-new-tokens", "3", "--json"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["model"] == str(folder) and record["random_weights"] is False


def test_unsupported_family_lists_the_supported_ones(tiny, tmp_path, clip):
    folder = shutil.copytree(tiny.source.folder, tmp_path / "other")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config["text_config"], "model_type": "qwen2"}))
    result = runner.invoke(app, ["ask", str(clip), "q?", "--model", str(folder), "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: model '{folder}' is a 'qwen2' checkpoint, which is not supported; "
        "supported: LLaVA-OneVision (llava_onevision), Qwen2.5-VL (qwen2_5_vl), Qwen3-VL (qwen3_vl), "
        "SmolVLM2 (smolvlm)"
    ]


def test_folder_without_config_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        resolve(str(tmp_path))


def test_uncached_hub_model_offline_names_the_model():
    with pytest.raises(ModelError, match=r"^model 'someone/not-here' is not in the local cache and offline mode is on;"):
        resolve("someone/not-here", offline=True)
