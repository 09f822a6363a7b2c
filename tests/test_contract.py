"""The contract: every compression method runs on every model family through `dycoke ask --json`, and
the visual token counts it reports are the ones an independent computation gives.

The methods and families come from the registries, so a new one is covered by itself, and this file
fails until its rule (EXPECTED_AFTER) and a tiny random spec of the family exist: those are the places
a contributor must touch. Tokens per frame (or per Qwen temporal group of 2 frames) are derived here
from each tiny checkpoint's own config and preprocessing settings with transformers' helpers, never
from the adapters; the counts each method keeps under `--budget B` follow from the method's published
rule. B = 2T - 1 (T tokens per frame) is reachable by every method (DyCoke keeps its anchor frame whole
and prunes the rest to fit).
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from conftest import write_clip
from dycoke_cli.cli import app
from dycoke_cli.compress import registry
from dycoke_cli.models import random_specs
from dycoke_cli.models.registry import FAMILIES as ADAPTERS

runner = CliRunner()
FRAMES = 4
# Every registered method, and the ones that can act inside the vision tower there too (the tiny towers
# have 2 or 3 layers: the selection sits at layer 1).
METHODS = list(registry.METHODS) + ["dycoke@encoder", "evs@encoder"]
SPEC = {("fastv", True): "fastv:layer=3", ("earlytom", None): "earlytom:encoder_layer=1",
        ("dycoke@encoder", None): "dycoke:stage=encoder,encoder_layer=1",
        ("evs@encoder", None): "evs:stage=encoder,encoder_layer=1"}


def _tiny_specs() -> dict[str, str]:
    """Family name -> its tiny random spec (the one the tests run), from the random-spec registry."""
    return {family: next((spec.name for spec in specs if spec.tiny), None) for family, specs in random_specs.BUILDERS}


FAMILIES = [spec for spec in _tiny_specs().values() if spec is not None]
SIZE = (192, 128)  # width, height of the test clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "contract.mp4", frames=16, size=SIZE, rate=8)


def _folder(name: str):
    from dycoke_cli.models.random_specs import materialise, random_spec

    return materialise(random_spec(f"random:{name}"))


def _settings(folder) -> dict:
    for file in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if (folder / file).is_file():
            return json.loads((folder / file).read_text())
    return {}


def layout(name: str) -> tuple[int, int]:
    """(frames or groups F, tokens per frame T) of a 4-frame sample of the 192x128 clip, from the checkpoint."""
    folder = _folder(name)
    config, settings = json.loads((folder / "config.json").read_text()), _settings(folder)
    width, height = SIZE
    vision = config["vision_config"]
    if config["model_type"] == "llava_onevision":  # SigLIP grid, 2x2 bilinear pooling (ceil)
        side = math.ceil(vision["image_size"] // vision["patch_size"] / 2)
        return FRAMES, side * side
    if config["model_type"] == "smolvlm":  # square frames, pixel shuffle by scale_factor
        side = settings["max_image_size"]["longest_edge"] // vision["patch_size"] // config["scale_factor"]
        return FRAMES, side * side
    factor = vision["patch_size"] * vision["spatial_merge_size"]
    if config["model_type"] == "qwen2_5_vl":
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        h, w = smart_resize(height, width, factor, settings["min_pixels"], settings["max_pixels"])
        return FRAMES // 2, (h // factor) * (w // factor)
    # Qwen3-VL: 128x192 is already a multiple of 32 and the clip's pixels lie inside its budget, so no resize.
    size = settings["size"]
    assert height % factor == 0 and width % factor == 0
    assert size["shortest_edge"] <= 2 * height * width and FRAMES * height * width <= size["longest_edge"]
    return FRAMES // 2, (height // factor) * (width // factor)


def _dycoke(frames: int, per_frame: int, budget: int) -> int:
    """TTM windows of 4: frame 0 of each window whole, the others share the rest of the budget."""
    whole = -(-frames // 4)
    pruned = frames - whole
    return whole * per_frame + pruned * min(per_frame, (budget - whole * per_frame) // pruned)


# Visual tokens reaching the LM under `--budget B` of a video of F frames x T tokens, by each method's rule.
EXPECTED_AFTER = {
    "none": lambda frames, per_frame, budget: frames * per_frame,
    "fastv": lambda frames, per_frame, budget: frames * per_frame,  # drops inside the LM: the prompt keeps all
    "dycoke": _dycoke,
    "uniform": lambda frames, per_frame, budget: (budget // per_frame) * per_frame,  # whole frames only
    "evs": lambda frames, per_frame, budget: budget,  # token granularity
    "vidcom2": lambda frames, per_frame, budget: budget,
    "random": lambda frames, per_frame, budget: budget,
    "dynamics": lambda frames, per_frame, budget: budget,
    # inside the tower: under a budget every frame keeps the same share, budget // frames cells
    "earlytom": lambda frames, per_frame, budget: frames * min(per_frame, max(1, budget // frames)),
}
# What a family refuses, before loading: (method, family substring) -> the refusal's words.
REFUSED = {("earlytom", "qwen"): "computed here for SigLIP towers only"}


def test_every_registered_method_and_family_is_covered():
    assert set(EXPECTED_AFTER) == set(registry.METHODS), "write the new method's rule into EXPECTED_AFTER"
    tiny = _tiny_specs()
    assert {adapter.family for adapter in ADAPTERS} == set(tiny), "every family needs a random spec module"
    assert None not in tiny.values(), "every family needs a tiny random spec (tiny=True) for the tests"


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_family(clip, name, method):
    frames, per_frame = layout(name)
    budget = 2 * per_frame - 1
    spec = SPEC.get((method, "qwen3" in name), SPEC.get((method, None), method))
    method = spec.partition(":")[0]
    args = ["ask", str(clip), "What happens?", "--model", f"random:{name}", "--device", "cpu", "--dtype", "float32",
            "--frames", str(FRAMES), "--max-new-tokens", "3", "--json", "--compress", spec]
    if method != "none":
        args += ["--budget", str(budget)]
    result = runner.invoke(app, args)
    refusal = next((words for (m, family), words in REFUSED.items() if m == method and family in name), None)
    if refusal:
        assert result.exit_code == 2 and refusal in result.stderr
        return
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["visual_tokens_before"] == frames * per_frame
    assert record["visual_tokens_after"] == EXPECTED_AFTER[method](frames, per_frame, budget)
    assert record["tokens_per_frame"] == per_frame and record["generated_tokens"] <= 3
    if method == "fastv":  # layers >= K ran on the text plus `budget` visual tokens: the prompt, shrunk
        shrunk = record["prompt_tokens"] - frames * per_frame + budget
        assert record["compression"]["counters"]["prefill_tokens_after"] == shrunk


def test_fastv_inside_qwen3_deepstack_layers_is_a_usage_error(clip):
    result = runner.invoke(app, ["ask", str(clip), "q?", "--model", "random:tiny-qwen3-vl", "--device", "cpu",
                                 "--frames", "2", "--compress", "fastv:layer=2"])
    assert result.exit_code == 2
    assert "use layer >= 3" in result.stderr


@pytest.mark.parametrize("name", FAMILIES[1:])
def test_batch_reuses_the_video_and_answers_as_ask_does(clip, tmp_path, name):
    """`dycoke run`: one encoding per video, the second question reuses the cached [prefix + video] and
    answers exactly what a fresh `ask` answers."""
    questions = ["What happens in this video?", "What colour is the bar?"]
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps({"id": i, "video": str(clip), "question": q}) + "\n"
                              for i, q in enumerate(questions)))
    common = ["--model", f"random:{name}", "--device", "cpu", "--dtype", "float32", "--frames", str(FRAMES),
              "--max-new-tokens", "3"]
    result = runner.invoke(app, ["run", str(source), *common])
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "q.answers.jsonl").read_text().splitlines()]
    assert [r["video_reused"] for r in records] == [False, True]
    assert records[0]["prefix_reused_tokens"] == 0 < records[1]["prefix_reused_tokens"]
    alone = runner.invoke(app, ["ask", str(clip), questions[1], *common, "--json"])
    assert alone.exit_code == 0, alone.stderr
    assert json.loads(alone.stdout)["answer"] == records[1]["answer"]
