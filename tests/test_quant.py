"""bitsandbytes 4-bit and 8-bit on the CPU: the language model quantized, vision and projector not."""

from __future__ import annotations

import pytest
import torch

from dycoke_cli.engine import Session, encode_video
from dycoke_cli.models import load_model
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling


@pytest.mark.parametrize("quant, layer_class", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_load_and_generate(quant, layer_class, clip):
    lm = load_model("random:tiny", device="cpu", quant=quant)
    model = lm.model
    text_linear = model.model.language_model.layers[0].self_attn.q_proj
    assert type(text_linear).__name__ == layer_class
    vision_linears = [m for m in model.model.vision_tower.modules() if "Linear" in type(m).__name__]
    assert vision_linears and all(type(m) is torch.nn.Linear for m in vision_linears)
    assert type(model.model.multi_modal_projector.linear_1) is torch.nn.Linear
    assert type(model.lm_head) is torch.nn.Linear
    answer = Session(lm, encode_video(lm, clip, Sampling(frames=4)), parse_spec("dycoke")).ask(
        "What happens?", Generation(max_new_tokens=5, min_new_tokens=5))
    assert len(answer.token_ids) == 5
    assert answer.stats.quantization == quant
