"""The attention seam: a method's hook runs inside the text model's own attention implementation, and
only while it acts.

What is observed, not assumed: which modules the hooked function sees (the text layers, never the
vision tower), what the unhooked steps compute, and what the model runs after the hook is gone. Eager
and SDPA round differently (a premise checked below), so bit-identical numbers mean the loaded
implementation ran, and a silent switch to the other one would show.
"""

from __future__ import annotations

import pytest
import torch

from dycoke_cli.compress.attention import AttentionHook, HookContext, active
from dycoke_cli.engine import Session, encode_video
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def loaded(request, _private_cache):
    from dycoke_cli.models import load_model

    return load_model("random:tiny", device="cpu", dtype="float32", quant="none", attention=request.param)


def text_logits(lm) -> torch.Tensor:
    """The language model's logits on a fixed prompt: a fingerprint of the attention it runs."""
    ids = torch.arange(5, 45).view(1, -1)
    with torch.no_grad():
        return lm.model(input_ids=ids).logits


class Recorder(AttentionHook):
    """Plain attention, noting every module it is called for."""

    def __init__(self, context):
        super().__init__(context)
        self.modules = []

    def attend(self, module, query, key, value, attention_mask, **kwargs):
        self.modules.append(module)
        return super().attend(module, query, key, value, attention_mask, **kwargs)


def test_the_loaded_implementation_is_kept_when_no_hook_acts(loaded, clip):
    before = text_logits(loaded)
    video = encode_video(loaded, clip, Sampling(frames=2))
    Session(loaded, video, "dycoke").ask("What happens?", Generation(max_new_tokens=3))  # DP hooks this one
    assert torch.equal(text_logits(loaded), before)  # switched back to what it was loaded with
    assert not any(hasattr(layer.self_attn, "dycoke_dispatch") for layer in loaded.adapter.text_layers())


def test_a_hook_sees_only_the_text_layers_and_falls_back_to_the_loaded_implementation(loaded, clip):
    video = encode_video(loaded, clip, Sampling(frames=2))
    session = Session(loaded, video, "none", reuse_prefix=False)  # each ask prefills in full
    plain = session.ask("What happens?", Generation(max_new_tokens=3, min_new_tokens=3), keep_logits=True)
    prompt = session.prompt([("What happens?", None)])
    recorder = Recorder(HookContext(visual=prompt.visual, prompt_length=len(prompt.ids)))
    layers = loaded.adapter.text_layers()
    with active(loaded.model, layers, recorder, loaded.attention):
        hooked = session.ask("What happens?", Generation(max_new_tokens=3, min_new_tokens=3), keep_logits=True)
    text = {id(layer.self_attn) for layer in layers}
    assert recorder.modules and {id(m) for m in recorder.modules} == text
    assert len(recorder.modules) == 3 * len(layers)  # every layer at prefill and at both decode steps
    assert hooked.token_ids == plain.token_ids
    assert torch.equal(torch.stack(hooked.logits), torch.stack(plain.logits))  # the same implementation's numbers


def test_eager_and_sdpa_differ_at_float_rounding(clip, _private_cache):
    """The premise of the tests above: the two implementations' numbers are not bit-identical here, so
    equality means the loaded one ran."""
    from dycoke_cli.models import load_model

    prompt, answer = {}, {}
    for implementation in ("eager", "sdpa"):
        lm = load_model("random:tiny", device="cpu", dtype="float32", quant="none", attention=implementation)
        prompt[implementation] = text_logits(lm)
        session = Session(lm, encode_video(lm, clip, Sampling(frames=2)), "none")
        answer[implementation] = torch.stack(session.ask("What happens?", Generation(3, 3), keep_logits=True).logits)
    for logits in (prompt, answer):
        assert not torch.equal(logits["eager"], logits["sdpa"])
        assert torch.allclose(logits["eager"], logits["sdpa"], atol=1e-3)
