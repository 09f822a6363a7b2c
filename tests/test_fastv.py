"""FastV on a tiny Qwen2, checked against an independent masked reference.

The reference never calls dycoke code: it ranks the visual tokens from the attention probabilities
that eager attention returns at layer K-1 for the last prompt token, then runs prefill and every
decode step layer by layer on the stock SDPA model, with a -inf mask on the dropped visual
positions in layers >= K only. Physically dropping those tokens from layers >= K (what FastV does)
and masking them are the same maths for the kept tokens, so tokens must match exactly and logits to
float32 rounding.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from dycoke_cli.compress import fastv
from dycoke_cli.compress.attention import HookContext, active
from dycoke_cli.compress.base import VisualLayout
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.errors import SettingsError

LAYERS, PROMPT, NEW = 5, 64, 10
SPAN = (8, 56)  # 48 "visual" positions in the middle of the prompt
N_VISUAL = SPAN[1] - SPAN[0]
EOS = 1


def _config() -> Qwen2Config:
    return Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       tie_word_embeddings=False, eos_token_id=EOS, pad_token_id=0)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    stock = Qwen2ForCausalLM(_config()).eval()
    with torch.no_grad():  # default std 0.02 gives degenerate greedy text
        for p in stock.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    hooked = Qwen2ForCausalLM(_config()).eval()
    hooked.load_state_dict(stock.state_dict())
    eager = Qwen2ForCausalLM(_config()).eval()
    eager.load_state_dict(stock.state_dict())
    eager.set_attn_implementation("eager")
    return SimpleNamespace(stock=stock, hooked=hooked, eager=eager)


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.randint(2, 128, (1, PROMPT), generator=torch.Generator().manual_seed(1))


def _fastv(models, ids, layer: int, keep: int):
    hook = fastv.Shrink(HookContext(visual=torch.arange(*SPAN), prompt_length=PROMPT), layer, keep)
    with torch.no_grad(), active(models.hooked, list(models.hooked.model.layers), hook, "sdpa"):
        out = models.hooked.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True, pad_token_id=0, eos_token_id=EOS,
                                     cache=DynamicCache(config=models.hooked.config))
    return out.sequences[0, PROMPT:], torch.stack(out.logits)[:, 0], hook, out.cache


def _pick(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.clone()
    logits[EOS] = float("-inf")  # what min_new_tokens does inside generate
    return logits.argmax()


def _run_layers(model, ids, cache, masks):
    """One forward step run layer by layer, each decoder layer with its own additive mask."""
    inner = model.model
    start = cache.get_seq_length()
    pos = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
    h = inner.embed_tokens(ids)
    emb = inner.rotary_emb(h, pos)
    for layer, mask in zip(inner.layers, masks):
        h = layer(h, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, position_embeddings=emb)
    return model.lm_head(inner.norm(h))[0, -1]  # (V,)


@torch.no_grad()
def _reference(models, ids, layer: int, keep: int):
    probs = models.eager(input_ids=ids, output_attentions=True).attentions[layer - 1][0, :, -1].double().mean(0)
    visual = probs[SPAN[0]:SPAN[1]]
    order = sorted(range(N_VISUAL), key=lambda j: (-visual[j].item(), j))[:keep]
    dropped = sorted(set(range(N_VISUAL)) - set(order))
    dropped = [SPAN[0] + j for j in dropped]

    def masks(q_len: int, k_len: int):
        causal = torch.full((q_len, k_len), float("-inf")).triu(k_len - q_len + 1)
        pruned = causal.clone()
        pruned[:, dropped] = float("-inf")
        return [causal.view(1, 1, q_len, k_len)] * layer + [pruned.view(1, 1, q_len, k_len)] * (LAYERS - layer)

    model, cache = models.stock, DynamicCache(config=models.stock.config)
    logits = [_run_layers(model, ids, cache, masks(PROMPT, PROMPT))]
    tokens = [_pick(logits[-1])]
    for step in range(NEW - 1):
        length = PROMPT + step + 1
        logits.append(_run_layers(model, tokens[-1].view(1, 1), cache, masks(1, length)))
        tokens.append(_pick(logits[-1]))
    return torch.stack(tokens), torch.stack(logits), sorted(SPAN[0] + j for j in order)


@pytest.mark.parametrize("layer,keep", [(2, 24), (1, 10), (4, 40)])
def test_matches_masked_reference(models, prompt, layer, keep):
    tokens, logits, hook, cache = _fastv(models, prompt, layer, keep)
    ref_tokens, ref_logits, kept = _reference(models, prompt, layer, keep)
    assert len(set(ref_tokens.tolist())) > 3, "premise: greedy text is not degenerate"
    assert torch.equal(tokens, ref_tokens)
    assert (logits - ref_logits).abs().max().item() < 1e-4
    visual_kept = [p for p in hook.keep.tolist() if SPAN[0] <= p < SPAN[1]]
    assert visual_kept == kept
    shrunk = PROMPT - N_VISUAL + keep
    assert hook.keep.numel() == shrunk
    # Layers below K cached the whole prompt, layers from K on only the kept tokens (plus generated ones).
    lengths = [cache.layers[i].keys.shape[2] for i in range(LAYERS)]
    assert lengths == [PROMPT + NEW - 1] * layer + [shrunk + NEW - 1] * (LAYERS - layer)
    assert hook.attended == [shrunk + i + 1 for i in range(NEW - 1)]


def test_layers_below_k_are_untouched_and_above_run_short(models, prompt, monkeypatch):
    seen = []
    stock = fastv.plain

    def recording(module, query, key, value, attention_mask, **kwargs):
        seen.append((module.layer_idx, query.shape[2], key.shape[2]))
        return stock(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(fastv, "plain", recording)
    _fastv(models, prompt, 2, 24)
    shrunk = PROMPT - N_VISUAL + 24
    assert seen[:LAYERS] == [(0, PROMPT, PROMPT), (1, PROMPT, PROMPT)] + [(i, shrunk, shrunk) for i in range(2, LAYERS)]
    _, stock_logits, _, _ = _fastv(models, prompt, 2, N_VISUAL)  # keeping everything is the stock model
    with torch.no_grad():
        plain = models.stock.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                      output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                                      eos_token_id=EOS)
    assert torch.allclose(stock_logits, torch.stack(plain.logits)[:, 0], atol=1e-5)


def test_budget_and_settings():
    method = parse_spec("fastv:layer=2,budget=30").build()
    assert method.kept_visual(48) == 30
    assert method.solve(VisualLayout(frames=4, grid=(1, 12))) == {"layer": 2, "rate": 0.375}
    assert parse_spec("fastv:rate=0.75").build().kept_visual(48) == 12
    with pytest.raises(SettingsError, match="leaves no layer"):
        parse_spec("fastv:layer=5").build().check_model(5)
    with pytest.raises(SettingsError, match="use layer >= 3"):
        parse_spec("fastv:layer=2").build().check_model(28, min_prune_layer=3)
    assert parse_spec("fastv").build().question_dependent
