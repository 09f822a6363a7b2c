"""Decode-time KV pruning (DP) on a tiny Qwen2, checked against an independent masked reference.

The reference never calls dycoke code: it takes the attention probabilities that eager attention
returns at layer L-1 (output_attentions on a throwaway copy of the cache), selects from them, and
runs the decode step layer by layer with a -inf mask on the dropped visual positions for layers
>= L only. SDPA on a gathered subset and eager softmax under a -inf mask are the same maths, so
tokens must match exactly and logits to float32 rounding.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers import Qwen2Config, Qwen2ForCausalLM

from dycoke_cli.compress import dp as kv
from dycoke_cli.compress.attention import HookContext, active
from dycoke_cli.compress.dp import DecodePruner, DPConfig
from dycoke_cli.errors import SettingsError

LAYERS, PROMPT, NEW = 5, 64, 12
SPAN = (8, 56)  # 48 "visual" positions in the middle of the prompt
N_VISUAL = SPAN[1] - SPAN[0]
EOS = 1
GEN = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True,
           return_dict_in_generate=True, pad_token_id=0, eos_token_id=EOS)


def _config() -> Qwen2Config:
    return Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       tie_word_embeddings=False, eos_token_id=EOS, pad_token_id=0)


@pytest.fixture(scope="module")
def models():
    """Three models with the same weights: stock SDPA (never hooked), the one DP hooks, eager (for probabilities)."""
    torch.manual_seed(0)
    stock = Qwen2ForCausalLM(_config()).eval()
    with torch.no_grad():  # default std 0.02 gives degenerate greedy text
        for p in stock.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    dp = Qwen2ForCausalLM(_config()).eval()
    dp.load_state_dict(stock.state_dict())
    ref = Qwen2ForCausalLM(_config()).eval()
    ref.load_state_dict(stock.state_dict())
    ref.set_attn_implementation("eager")
    return SimpleNamespace(stock=stock, dp=dp, ref=ref)


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.randint(2, 128, (1, PROMPT), generator=torch.Generator().manual_seed(1))


def _generate(model, ids):
    with torch.no_grad():
        out = model.generate(ids, **GEN)
    return out.sequences[0, ids.shape[1]:], torch.stack(out.logits)[:, 0], out.cache  # (N,), (N, V)


def _full_len(step: int) -> int:
    return PROMPT + 1 + step  # cache length at decode step i, the new token included


def _pruned_len(step: int, p: float) -> int:
    return _full_len(step) - N_VISUAL + int(N_VISUAL * (1 - p))


def pruning(cfg: DPConfig, span=SPAN, model=None):
    """DP as the engine runs it: a DecodePruner over the span's positions, active on the DP model."""
    model = model or _MODELS["dp"]
    context = HookContext(visual=torch.arange(*span), prompt_length=PROMPT)
    return active(model, list(model.model.layers), DecodePruner(cfg, context), "sdpa")


_MODELS: dict = {}


@pytest.fixture(autouse=True)
def _dp_model(models):
    _MODELS["dp"] = models.dp


# ---------------------------------------------------------------- independent reference


def _pick(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.clone()
    logits[EOS] = float("-inf")  # what min_new_tokens does inside generate
    return logits.argmax()


def _step_with_layer_masks(model, tok, cache, masks):
    """One decode step run layer by layer, each decoder layer with its own additive mask."""
    inner = model.model
    pos = torch.tensor([[cache.get_seq_length()]])
    h = inner.embed_tokens(tok)  # (1, 1, D)
    emb = inner.rotary_emb(h, pos)
    for layer, mask in zip(inner.layers, masks):
        h = layer(h, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                  position_embeddings=emb)
    return model.lm_head(inner.norm(h))[0, -1]  # (V,)


@torch.no_grad()
def _reference(models, ids, cfg: DPConfig):
    """Greedy decode with DyCoke DP written as attention masks; returns tokens, logits, decisions, kept sets.

    Selection comes from the eager model's attention probabilities; the masked steps run on the
    stock SDPA model, so the comparison measures DP and not eager-vs-SDPA rounding (~5e-5 here).
    """
    model = models.stock
    start, end = SPAN
    n_keep = int(N_VISUAL * (1 - cfg.p))
    cache = DynamicCache(config=model.config)
    logits = [model(input_ids=ids, cache=cache, use_cache=True).logits[0, -1]]
    tokens = [_pick(logits[-1])]
    decisions, kept, cosines, prev, last = [], [], [], None, None
    for _ in range(NEW - 1):
        tok = tokens[-1].view(1, 1)
        probe = models.ref(input_ids=tok, cache=copy.deepcopy(cache), use_cache=True,
                           output_attentions=True)
        probs = probe.attentions[cfg.layer - 1][0, :, -1].double().mean(0)  # (S,) eager probs, head mean
        visual = probs[start:end]
        cos = None if prev is None else F.cosine_similarity(visual, prev, dim=0).item()
        cosines.append(cos)
        if cos is None or cos < cfg.threshold:
            last, decision = sorted((visual.topk(n_keep).indices + start).tolist()), "selected"
            chosen = last
        elif cfg.gate == "reuse":
            chosen, decision = last, "reused"
        else:
            chosen, decision = None, "full"
        prev = visual
        mask = None
        if chosen is not None:
            mask = torch.zeros(1, 1, 1, probs.shape[0])
            mask[..., start:end] = float("-inf")
            mask[..., chosen] = 0.0
        masks = [None] * cfg.layer + [mask] * (LAYERS - cfg.layer)  # layers < L: full cache
        logits.append(_step_with_layer_masks(model, tok, cache, masks))
        tokens.append(_pick(logits[-1]))
        decisions.append(decision)
        kept.append(chosen)
    return SimpleNamespace(tokens=torch.stack(tokens), logits=torch.stack(logits), decisions=decisions,
                           kept=kept, cosines=cosines)


def _check_against_reference(models, prompt, cfg: DPConfig):
    with pruning(cfg, SPAN) as pr:
        tokens, logits, _ = _generate(models.dp, prompt)
    ref = _reference(models, prompt, cfg)
    assert torch.equal(tokens, ref.tokens)
    assert (logits - ref.logits).abs().max().item() < 1e-4
    assert [None if k is None else k.tolist() for k in pr.kept_visual] == ref.kept
    counts = {d: ref.decisions.count(d) for d in ("selected", "reused", "full")}
    assert (pr.selected, pr.reused, pr.full) == (counts["selected"], counts["reused"], counts["full"])
    assert pr.attended == [_full_len(i) if k is None else _pruned_len(i, cfg.p) for i, k in enumerate(ref.kept)]
    return pr, ref


# ---------------------------------------------------------------- tests


def test_p0_and_no_pruner_are_bit_identical_to_stock_sdpa(models, prompt):
    tokens, logits, _ = _generate(models.stock, prompt)
    assert len(set(tokens.tolist())) > 3, "premise: greedy text is not degenerate"
    same_tokens, same_logits, _ = _generate(models.dp, prompt)  # hooked before, no pruner active now
    assert torch.equal(tokens, same_tokens) and torch.equal(logits, same_logits)
    with pruning(DPConfig(p=0.0), SPAN) as pr:
        p0_tokens, p0_logits, _ = _generate(models.dp, prompt)
    assert torch.equal(tokens, p0_tokens) and torch.equal(logits, p0_logits)
    assert pr.attended == [_full_len(i) for i in range(NEW - 1)]
    assert (pr.selected, pr.reused, pr.full) == (0, 0, NEW - 1)


def test_prefill_and_first_token_are_never_pruned(models, prompt):
    _, stock_logits, _ = _generate(models.stock, prompt)
    with pruning(DPConfig(p=0.7, threshold=2.0), SPAN):
        _, logits, _ = _generate(models.dp, prompt)
    assert torch.equal(logits[0], stock_logits[0])
    assert not torch.allclose(logits[1:], stock_logits[1:]), "premise: P=0.7 changes later steps"


@pytest.mark.parametrize("p,layer", [(0.7, 3), (0.5, 1), (0.9, 4)])
def test_matches_masked_reference_when_selecting_every_step(models, prompt, p, layer):
    # threshold 2: a cosine is never >= 2, so every decode step selects anew.
    pr, _ = _check_against_reference(models, prompt, DPConfig(p=p, layer=layer, threshold=2.0))
    assert (pr.selected, pr.reused, pr.full) == (NEW - 1, 0, 0)
    assert pr.attended == [_pruned_len(i, p) for i in range(NEW - 1)]  # e.g. 65 - 48 + 14 = 31 at P=0.7


def test_gate_reuse_at_or_above_threshold_keeps_first_selection(models, prompt):
    # threshold -1: every cosine is >= -1, so after the first step the indices are reused.
    pr, _ = _check_against_reference(models, prompt, DPConfig(p=0.7, gate="reuse", threshold=-1.0))
    assert (pr.selected, pr.reused, pr.full) == (1, NEW - 2, 0)
    assert all(k is pr.kept_visual[0] for k in pr.kept_visual)
    assert pr.attended == [_pruned_len(i, 0.7) for i in range(NEW - 1)]


def test_gate_released_at_or_above_threshold_runs_full_cache(models, prompt):
    pr, _ = _check_against_reference(models, prompt, DPConfig(p=0.7, gate="released", threshold=-1.0))
    assert (pr.selected, pr.reused, pr.full) == (1, 0, NEW - 2)
    assert pr.kept_visual[1:] == [None] * (NEW - 2)
    assert pr.attended == [_pruned_len(0, 0.7)] + [_full_len(i) for i in range(1, NEW - 1)]


@pytest.mark.parametrize("gate", ["reuse", "released"])
def test_gate_with_mixed_decisions_matches_reference(models, prompt, gate):
    # A threshold between the observed cosines, so some steps select anew and others do not.
    probe = _reference(models, prompt, DPConfig(p=0.7, gate=gate, threshold=2.0))
    cos = sorted(c for c in probe.cosines if c is not None)
    threshold = (cos[len(cos) // 2 - 1] + cos[len(cos) // 2]) / 2
    pr, ref = _check_against_reference(models, prompt, DPConfig(p=0.7, gate=gate, threshold=threshold))
    assert pr.selected >= 2 and (pr.reused if gate == "reuse" else pr.full) >= 2, ref.decisions
    assert min(abs(c - threshold) for c in ref.cosines if c is not None) > 1e-5, "premise: no near-tie"


def test_layers_below_L_see_full_cache_and_later_layers_the_subset(models, prompt, monkeypatch):
    calls = []
    stock_attention = kv.plain

    def recording(module, query, key, value, attention_mask, **kwargs):
        calls.append((module.layer_idx, query.shape[2], key.shape[2]))
        return stock_attention(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(kv, "plain", recording)
    with pruning(DPConfig(p=0.7, layer=2, threshold=2.0), SPAN) as pr:
        _generate(models.dp, prompt)
    prefill, decode = calls[:LAYERS], calls[LAYERS:]
    assert prefill == [(i, PROMPT, PROMPT) for i in range(LAYERS)]
    assert len(decode) == (NEW - 1) * LAYERS
    for step in range(NEW - 1):
        seen = decode[step * LAYERS:(step + 1) * LAYERS]
        assert seen == [(i, 1, _full_len(step) if i < 2 else pr.attended[step]) for i in range(LAYERS)]


def test_pruned_tokens_can_return_and_cache_stays_whole(models, prompt):
    with pruning(DPConfig(p=0.7, threshold=2.0), SPAN) as pr:
        _, _, cache = _generate(models.dp, prompt)
    assert cache.get_seq_length() == PROMPT + NEW - 1  # nothing was removed from the cache
    kept = [set(k.tolist()) for k in pr.kept_visual]
    returned = [pos for i in range(len(kept)) for j in range(i + 1, len(kept)) for pos in kept[j] - kept[i]]
    assert returned, "some visual position dropped at one step is attended at a later one"


def test_state_resets_per_question(models, prompt):
    cfg = DPConfig(p=0.7, gate="reuse", threshold=-1.0)
    with pruning(cfg, SPAN) as first:
        t1, l1, _ = _generate(models.dp, prompt)
    with pruning(cfg, SPAN) as second:
        t2, l2, _ = _generate(models.dp, prompt)
    assert torch.equal(t1, t2) and torch.equal(l1, l2)
    assert first.attended == second.attended and (first.selected, first.reused) == (second.selected, second.reused)
    # Two generations in one block: the second one starts with a fresh selection too.
    with pruning(cfg, SPAN) as both:
        _generate(models.dp, prompt)
        t3, l3, _ = _generate(models.dp, prompt)
    assert torch.equal(t1, t3) and torch.equal(l1, l3)
    assert (both.selected, both.reused, both.steps) == (2, 2 * (NEW - 2), 2 * (NEW - 1))
    assert not hasattr(models.dp.model.layers[0].self_attn, "dycoke_dispatch")  # the seam is gone afterwards


def test_batch_of_two_is_refused(models, prompt):
    with pruning(DPConfig(), SPAN), pytest.raises(SettingsError, match="batch size 1"):
        _generate(models.dp, prompt.repeat(2, 1))


def test_settings_are_validated(models, prompt):
    for bad in (dict(p=-0.1), dict(p=1.5), dict(layer=0), dict(gate="always"), dict(threshold=float("nan"))):
        with pytest.raises(SettingsError):
            DPConfig(**bad)
    with pruning(DPConfig(layer=LAYERS), SPAN), pytest.raises(SettingsError, match="no layer to prune"):
        _generate(models.dp, prompt)


def test_four_d_masks_are_scored_and_gathered():
    """Decode masks are usually None; a padded prompt gives a 4-D boolean one, which must be honoured."""
    g = torch.Generator().manual_seed(3)
    heads, kv_heads, length, dim = 4, 2, 20, 8
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = SimpleNamespace(layer_idx=0, num_key_value_groups=2, config=SimpleNamespace(num_hidden_layers=3),
                             dycoke_dispatch=SimpleNamespace(fallback=sdpa_attention_forward), is_causal=True)
    q = torch.randn(1, heads, 1, dim, generator=g)
    k, v = (torch.randn(1, kv_heads, length, dim, generator=g) for _ in range(2))
    mask = torch.ones(1, 1, 1, length, dtype=torch.bool)
    mask[..., 5] = False  # a padded visual position
    cfg, span = DPConfig(p=0.5, layer=1, threshold=2.0), (2, 12)

    def eager(allowed):  # (1, H, 1, hd) attention over the allowed positions
        kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        logits = (q @ kk.transpose(2, 3)) / dim**0.5
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        return probs, (probs @ vv).transpose(1, 2)

    probs, _ = eager(mask)
    visual = probs[0, :, 0].mean(0)[2:12]
    expected = sorted((visual.topk(5).indices + 2).tolist())
    pruner = DecodePruner(cfg, HookContext(visual=torch.arange(*span), prompt_length=length))
    pruner.attend(module, q, k, v, mask, scaling=dim**-0.5)  # layer 0 = L-1: scores and selects
    assert pruner.kept_visual[0].tolist() == expected and 5 not in expected
    module.layer_idx = 1  # layer L: attends to the subset, the mask gathered along with K/V
    out, _ = pruner.attend(module, q, k, v, mask, scaling=dim**-0.5)
    allowed = mask.clone()
    allowed[..., 2:12] = False
    allowed[..., expected] = True
    assert torch.allclose(out, eager(allowed)[1], atol=1e-6)


HOST_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "argwhere",
              "masked_select", "unique", "__len__", "__iter__"}


class _HostReads(torch.overrides.TorchFunctionMode):
    """Records every tensor function that hands a value (or a value-dependent size) to the host."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in HOST_READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("gate", ["reuse", "released"])
def test_decode_steps_never_read_a_tensor_on_the_host(monkeypatch, gate):
    """What a CUDA graph (and a sync-free step) needs: the gate's outcome stays on the device; the
    counters read every step's outcome once, when asked for."""
    g = torch.Generator().manual_seed(4)
    heads, kv_heads, dim, layers, prompt_len = 4, 2, 8, 4, 30
    monkeypatch.setattr(kv, "plain", lambda module, q, k, v, mask, **kw: (torch.zeros_like(q).transpose(1, 2), None))
    config = SimpleNamespace(num_hidden_layers=layers)
    pruner = DecodePruner(DPConfig(p=0.5, layer=2, gate=gate, threshold=0.9),
                          HookContext(visual=torch.arange(4, 24), prompt_length=prompt_len))
    key = torch.randn(1, kv_heads, prompt_len + 12, dim, generator=g)
    with _HostReads() as reads:
        for step in range(12):
            q = torch.randn(1, heads, 1, dim, generator=g)
            k = key[:, :, :prompt_len + step + 1]
            for layer in range(layers):
                module = SimpleNamespace(layer_idx=layer, num_key_value_groups=2, config=config)
                pruner.attend(module, q, k, k, None, scaling=dim**-0.5)
    assert reads.seen == []
    outcomes = (pruner.selected, pruner.reused, pruner.full)
    assert sum(outcomes) == 12 and pruner.selected >= 2 and outcomes[1 if gate == "reuse" else 2] >= 1, outcomes
