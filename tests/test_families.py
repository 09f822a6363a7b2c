"""Qwen2.5-VL, Qwen3-VL and SmolVLM2 against plain transformers, on tiny random models.

Every check here is independent of the adapter it tests: reference prompts are built from the chat
template and transformers' own processor helpers, reference runs feed the family's own pixel inputs
straight into generate(), positions come from the model's get_rope_index on the unpruned prompt, and
pixels are compared with transformers' PIL image processors (the only processors that run without
torchvision).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import write_clip
from dycoke_cli.engine import Session, encode_frames
from dycoke_cli.models.base import Clip
from dycoke_cli.settings import Generation
from dycoke_cli.video import Frames, Sampling, read_frames

QWEN = ["tiny-qwen2.5-vl", "tiny-qwen3-vl"]
FAMILIES = QWEN + ["tiny-smolvlm2"]
QUESTIONS = ["What happens in this video?", "What colour is the bar?", "Is anything moving?"]
SIX = Generation(max_new_tokens=6, min_new_tokens=6)


@pytest.fixture(scope="session")
def wide_clip(tmp_path_factory):
    """192x128 at 8 fps: Qwen's 32 px (Qwen3) and 28 px (Qwen2.5) grids give several tokens per group."""
    return write_clip(tmp_path_factory.mktemp("clips") / "wide.mp4", frames=16, size=(192, 128), rate=8)


_LOADED: dict = {}


@pytest.fixture(scope="session")
def family(_private_cache):
    """name -> the tiny model in float32 on the CPU, loaded once per session."""
    from dycoke_cli.models import load_model

    def get(name: str):
        if name not in _LOADED:
            _LOADED[name] = load_model(f"random:{name}", device="cpu", dtype="float32", quant="none")
        return _LOADED[name]

    return get


@pytest.fixture(scope="session")
def four_frames(wide_clip):
    return read_frames(wide_clip, Sampling(frames=4))


def _encode(lm, clip, frames):
    return encode_frames(lm, clip, frames, 0.0)


# ------------------------------------------------------------------ independent references


def reference_prompt(lm, frames: Frames, question: str, per_frame: int) -> list[int]:
    """The unpruned prompt as transformers' processor would build it (Qwen3-VL: the reference layout)."""
    from transformers.models.smolvlm import processing_smolvlm as smol

    adapter, tokenizer = lm.adapter, lm.adapter.tokenizer
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, chat_template=adapter.chat_template, add_generation_prompt=True,
                                         tokenize=False)
    count = len(frames.timestamps)
    name = type(lm.model).__name__
    if name.startswith("Qwen2_5"):
        text = text.replace("<|video_pad|>", "<|video_pad|>" * (-(-count // 2) * per_frame))
    elif name.startswith("Qwen3"):
        from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

        stub = SimpleNamespace(video_processor=SimpleNamespace(merge_size=2, temporal_patch_size=2),
                               vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>",
                               video_token="<|video_pad|>")
        stub._calculate_timestamps = lambda *a: Qwen3VLProcessor._calculate_timestamps(stub, *a)
        grid = torch.tensor([[-(-count // 2), 2, per_frame * 2]])  # (t, h, w) with h * w / 4 = per_frame
        metadata = SimpleNamespace(fps=frames.fps, frames_indices=list(frames.indices))
        expansion = Qwen3VLProcessor.replace_video_token(stub, {"video_grid_thw": grid, "video_metadata": [metadata]}, 0)
        # The reference processor replaces the whole <|vision_start|><|video_pad|><|vision_end|> (5.x keeps the pair).
        text = text.replace("<|vision_start|><|video_pad|><|vision_end|>", expansion)
    else:
        from datetime import timedelta

        intro = smol.DEFAULT_VIDEO_INTRO.format(frame_count=_words(count),
                                                video_duration=str(timedelta(seconds=int(frames.duration))))
        image = smol._prompt_single_image(per_frame, fake_token_around_image="<fake_token_around_image>",
                                          image_token="<image>", global_image_token="<global-img>")
        for t in frames.timestamps:
            intro += smol.FRAME_TIMESTAMP_MESSAGE.format(timestamp=f"{int(t // 60):02d}:{int(t % 60):02d}") + image
        text = text.replace("<video>", intro + smol.DEFAULT_MEDIA_OUTTRO)
    return tokenizer(text, add_special_tokens=False).input_ids


def _words(n: int) -> str:
    return ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"][n]


def pixel_inputs(lm, frames: Frames, ids: list[int]) -> dict:
    """The family's own pixel inputs for generate(): what its processor returns."""
    pixels = lm.adapter.preprocess(frames, Clip(tuple(frames.timestamps), frames.duration))
    if "pixel_attention_mask" in pixels.extra:  # SmolVLM2: frames as images
        return {"pixel_values": pixels.values, "pixel_attention_mask": pixels.extra["pixel_attention_mask"]}
    video = torch.tensor([ids]).eq(lm.model.config.video_token_id)
    inputs = {"pixel_values_videos": pixels.values, "video_grid_thw": pixels.extra["video_grid_thw"],
              "mm_token_type_ids": video.int() * 2}
    if lm.adapter.family == "Qwen2.5-VL":  # M-RoPE time ids from the seconds between frames
        spacing = (frames.timestamps[-1] - frames.timestamps[0]) / (len(frames.timestamps) - 1)
        inputs["second_per_grid_ts"] = torch.tensor([2 * spacing])
    return inputs


def plain_generate(lm, ids: list[int], new_tokens: int, **inputs):
    out = lm.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                            return_dict_in_generate=True, output_logits=True, **inputs)
    return out.sequences[0, len(ids):].tolist(), torch.stack(out.logits)


# ------------------------------------------------------------------ compression off == generate()


@pytest.mark.parametrize("name", FAMILIES)
def test_no_compression_equals_plain_generate(family, wide_clip, four_frames, name):
    lm = family(name)
    video = _encode(lm, wide_clip, four_frames)
    answer = Session(lm, video, "none").ask(QUESTIONS[0], Generation(max_new_tokens=8, min_new_tokens=8),
                                           keep_logits=True)
    ids = reference_prompt(lm, four_frames, QUESTIONS[0], video.features.tokens.shape[1])
    assert answer.stats.prompt_tokens == len(ids)
    tokens, logits = plain_generate(lm, ids, 8, **pixel_inputs(lm, four_frames, ids))
    assert answer.token_ids == tokens
    assert len(set(tokens)) > 2, "greedy output is degenerate: the comparison would prove little"
    assert torch.equal(torch.stack(answer.logits), logits)


# ------------------------------------------------------------------ positions and deepstack under pruning


class RopeRecorder:
    """Records the (3, B, q) M-RoPE ids the language model's rotary embedding receives, every forward."""

    def __init__(self, lm):
        self.seen: list[torch.Tensor] = []
        rotary = lm.model.model.language_model.rotary_emb
        self.handle = rotary.register_forward_pre_hook(lambda m, args: self.seen.append(args[1][:, 0].clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("name", QWEN)
@pytest.mark.parametrize("method", ["random:rate=0.6", "evs:rate=0.5", "dynamics:tokens=10"])
def test_kept_tokens_keep_their_unpruned_positions(family, wide_clip, four_frames, name, method):
    lm = family(name)
    video = _encode(lm, wide_clip, four_frames)
    session = Session(lm, video, method)
    with RopeRecorder(lm) as rope:
        answer = session.ask(QUESTIONS[0], Generation(max_new_tokens=3, min_new_tokens=3))
    frames, per_frame = video.features.tokens.shape[:2]
    ids = torch.tensor([reference_prompt(lm, four_frames, QUESTIONS[0], per_frame)])
    video_token = lm.model.config.video_token_id
    grid = torch.tensor([[frames, 2 * video.features.grid[0], 2 * video.features.grid[1]]])
    extra = {}
    if "second_per_grid_ts" in video.features.meta:
        extra["second_per_grid_ts"] = torch.tensor([video.features.meta["second_per_grid_ts"]])
    full, _ = lm.model.model.get_rope_index(ids, mm_token_type_ids=ids.eq(video_token).int() * 2,
                                            video_grid_thw=grid, **extra)  # (3, 1, S) of the UNPRUNED prompt
    slots = ids[0].eq(video_token).nonzero().squeeze(1)  # (F*T,) prompt index of every visual token
    kept = ~ids[0].eq(video_token)
    kept[slots[session.kept.keep]] = True
    assert answer.stats.video.visual_tokens_after < frames * per_frame
    assert torch.equal(rope.seen[0], full[:, 0, kept])  # prefill: exactly the kept columns, text included
    last = full[:, 0, -1:]
    for step, seen in enumerate(rope.seen[1:], start=1):  # decode continues where the unpruned prompt would
        assert torch.equal(seen, last + step)


def test_every_deepstack_level_carries_exactly_the_kept_rows(family, wide_clip, four_frames, monkeypatch):
    lm = family("tiny-qwen3-vl")
    video = _encode(lm, wide_clip, four_frames)
    session = Session(lm, video, "evs:rate=0.5")
    text_model = lm.model.model.language_model
    calls = []
    original = text_model._deepstack_process

    def record(hidden, mask, embeds):
        calls.append((mask.clone(), embeds.clone()))
        return original(hidden, mask, embeds)

    monkeypatch.setattr(text_model, "_deepstack_process", record)
    session.ask(QUESTIONS[0], Generation(max_new_tokens=2, min_new_tokens=2))
    keep = session.kept.keep
    assert len(calls) == len(lm.model.config.vision_config.deepstack_visual_indexes) == 3
    for level, (mask, embeds) in enumerate(calls):
        expected = video.features.extras[f"deepstack.{level}"].flatten(0, 1)[keep]  # (N, D)
        assert int(mask.sum()) == keep.numel() < video.features.tokens.shape[0] * video.features.tokens.shape[1]
        assert torch.equal(embeds, expected)


def test_fastv_on_qwen3_refuses_layers_inside_deepstack(family):
    from dycoke_cli.compress.spec import parse_spec
    from dycoke_cli.errors import SettingsError

    lm = family("tiny-qwen3-vl")
    assert lm.adapter.min_prune_layer == 3
    with pytest.raises(SettingsError, match="layer >= 3"):
        parse_spec("fastv:layer=2").build().check_model(4, lm.adapter.min_prune_layer)


# ------------------------------------------------------------------ decode-time pruning (DP) reaches every layer


@pytest.mark.parametrize("name", FAMILIES)
def test_every_decoder_layer_calls_the_dispatched_attention(family, wide_clip, four_frames, name):
    """DP and FastV act through the registered attention function: it must see every text layer at every
    step (post-RoPE query, the whole cache), and never the vision tower."""
    from dycoke_cli.compress.attention import AttentionHook, HookContext, active

    lm = family(name)
    session = Session(lm, _encode(lm, wide_clip, four_frames), "none")
    prompt = session.prompt([(QUESTIONS[0], None)])
    seen = []

    class Probe(AttentionHook):
        def attend(self, module, query, key, value, attention_mask, **kwargs):
            seen.append((module.layer_idx, query.shape[2], key.shape[2]))
            return super().attend(module, query, key, value, attention_mask, **kwargs)

    layers = lm.adapter.text_layers()
    hook = Probe(HookContext(visual=prompt.visual, prompt_length=len(prompt.ids)))
    with active(lm.model, layers, hook, lm.attention):
        session.ask(QUESTIONS[0], Generation(max_new_tokens=3, min_new_tokens=3))
    n, length = len(layers), len(prompt.ids)
    assert seen == [(i, length if step == 0 else 1, length + step) for step in range(3) for i in range(n)]


@pytest.mark.parametrize("name", FAMILIES)
def test_dp_attends_the_promised_number_of_entries(family, wide_clip, four_frames, name):
    lm = family(name)
    video = _encode(lm, wide_clip, four_frames)
    stats = Session(lm, video, "dycoke:k=0,p=0.7").ask(QUESTIONS[0], SIX).stats
    visual = video.features.tokens.shape[0] * video.features.tokens.shape[1]
    expected = [stats.prompt_tokens + i - visual + int(visual * 0.3) for i in range(1, 6)]
    assert stats.kv_entries_attended_mean == sum(expected) / len(expected)


# ------------------------------------------------------------------ follow-ups and chat reuse the cache


@pytest.mark.parametrize("name", FAMILIES)
def test_follow_ups_reuse_the_video_prefix_and_answer_as_from_scratch(family, wide_clip, four_frames, name):
    lm = family(name)
    video = _encode(lm, wide_clip, four_frames)
    reusing = Session(lm, video, "dycoke")
    answers = [reusing.ask(q, SIX, keep_logits=True) for q in QUESTIONS]
    for question, answer in zip(QUESTIONS, answers):
        fresh = Session(lm, video, "dycoke", reuse_prefix=False).ask(question, SIX, keep_logits=True)
        assert answer.token_ids == fresh.token_ids
        assert torch.allclose(torch.stack(answer.logits), torch.stack(fresh.logits), atol=1e-4, rtol=0)
    prompt = reusing.prompt([(QUESTIONS[1], None)])
    assert answers[0].stats.prefix_reused_tokens == 0
    assert all(a.stats.prefix_reused_tokens >= prompt.video_end for a in answers[1:])


@pytest.mark.parametrize("name", FAMILIES)
def test_chat_turn_equals_the_conversation_rebuilt(family, wide_clip, four_frames, name):
    lm = family(name)
    video = _encode(lm, wide_clip, four_frames)
    chatting = Session(lm, video, "dycoke")
    first = chatting.chat(QUESTIONS[0], SIX)
    second = chatting.chat(QUESTIONS[1], SIX)
    assert second.stats.prefix_reused_tokens > 0
    rebuilt = Session(lm, video, "dycoke", reuse_prefix=False)
    rebuilt.history = [(QUESTIONS[0], first.text)]
    assert rebuilt.chat(QUESTIONS[1], SIX).token_ids == second.token_ids


# ------------------------------------------------------------------ preprocessing against transformers


def _frames(pixels: np.ndarray) -> Frames:
    count = len(pixels)
    return Frames(pixels=pixels, timestamps=[i / 4 for i in range(count)], indices=list(range(count)), fps=4.0,
                  duration=count / 4)


def _clip(pixels: np.ndarray) -> Clip:
    frames = _frames(pixels)
    return Clip(tuple(frames.timestamps), frames.duration)


def _noise(count: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, size", [("tiny-qwen2.5-vl", (112, 168)), ("tiny-qwen3-vl", (128, 192))])
def test_qwen_pixels_match_the_image_processor(family, name, size):
    """Frames already at the size the processor picks (no resize, whose filters differ between Pillow and
    torchvision): layout, temporal padding of an odd count, rescale and normalisation must match exactly."""
    from transformers import Qwen2VLImageProcessorPil

    lm = family(name)
    adapter = lm.adapter
    frames = _noise(3, *size)
    assert adapter.resized(3, *size) == size
    ours = adapter.preprocess(_frames(frames), _clip(frames)).values  # (G*gh*gw, 3*2*p*p)
    p = adapter.patch
    processor = Qwen2VLImageProcessorPil(min_pixels=size[0] * size[1], max_pixels=size[0] * size[1], patch_size=p,
                                         temporal_patch_size=2, merge_size=2, image_mean=adapter.mean,
                                         image_std=adapter.std, resample=3)
    rows = [processor(images=frame, return_tensors="pt")["pixel_values"].view(-1, 3, 2, p, p)[:, :, 0]
            for frame in frames]  # an image repeats itself over the temporal patch: keep one copy
    rows.append(rows[-1])  # the odd last frame is repeated
    expected = torch.cat([torch.stack(rows[i:i + 2], 2).flatten(1) for i in range(0, len(rows), 2)])
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= 1e-5


def test_smolvlm_pixels_match_the_image_processor(family):
    from transformers import SmolVLMImageProcessorPil

    lm = family("tiny-smolvlm2")
    side = lm.adapter.side
    frames = _noise(3, side, side)
    ours = lm.adapter.preprocess(_frames(frames), _clip(frames)).values  # (1, F, 3, S, S)
    processor = SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": side},
                                         max_image_size={"longest_edge": side}, resample=1,
                                         image_mean=lm.adapter.mean, image_std=lm.adapter.std)
    expected = processor(images=[list(frames)], return_tensors="pt")["pixel_values"]
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("height, width", [(360, 640), (64, 96), (1080, 1920), (100, 150), (2000, 30)])
def test_qwen2_5_frame_size_is_transformers_smart_resize(family, height, width):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    adapter = family("tiny-qwen2.5-vl").adapter
    expected = smart_resize(height, width, 28, adapter.min_pixels, adapter.max_pixels)
    assert adapter.resized(8, height, width) == tuple(expected)
    h, w = expected
    assert adapter.frame_tokens(height, width, 8) == (h // 28) * (w // 28)


def test_qwen3_budget_spans_the_clip(family):
    """Qwen3-VL's max_pixels bounds frames x h x w: more frames, smaller frames (and the reference cap
    bounds each frame at 768 tokens' worth)."""
    adapter = family("tiny-qwen3-vl").adapter
    few, many = adapter.frame_tokens(720, 1280, 8), adapter.frame_tokens(720, 1280, 512)
    assert few <= 768 and many < few
    assert adapter.frame_tokens(720, 1280, 512) * 512 * 32 * 32 <= adapter.max_pixels * 2


# ------------------------------------------------------------------ facts users see


@pytest.mark.parametrize("name, fps, max_frames", [("tiny-qwen2.5-vl", 2.0, 768), ("tiny-qwen3-vl", 2.0, 768),
                                                     ("tiny-smolvlm2", 1.0, 64)])
def test_default_sampling_is_the_familys(family, name, fps, max_frames):
    sampling = family(name).adapter.default_sampling()
    assert (sampling.fps, sampling.max_frames) == (fps, max_frames)


@pytest.mark.parametrize("name, skipped", [
    ("tiny-qwen2.5-vl", ["model.visual", "lm_head"]),
    ("tiny-qwen3-vl", ["model.visual", "lm_head"]),
    ("tiny-smolvlm2", ["model.vision_model", "model.connector", "lm_head"]),
])
def test_quantization_skips_name_real_module_prefixes(family, name, skipped):
    lm = family(name)
    modules = dict(lm.model.named_modules())
    assert lm.adapter.quant_skip_modules == skipped and all(prefix in modules for prefix in skipped)


def test_real_shape_specs_are_declared():
    from dycoke_cli.models.random_specs import random_spec

    for name, layers, hidden in [("qwen2.5-vl-3b", 36, 2048), ("qwen2.5-vl-7b", 28, 3584), ("qwen3-vl-2b", 28, 2048),
                                 ("qwen3-vl-8b", 36, 4096), ("smolvlm2-500m", 32, 960)]:
        spec = random_spec(f"random:{name}")
        assert (spec.text["num_hidden_layers"], spec.text["hidden_size"]) == (layers, hidden)


# ------------------------------------------------------------------ the tower in chunks


@pytest.mark.parametrize("name", ["tiny"] + FAMILIES)
def test_encoding_in_chunks_equals_encoding_at_once(family, wide_clip, name, monkeypatch):
    """Frames run through the tower a chunk at a time (bounded memory) give the tokens of one pass,
    every feature level and the prompt's facts included; an odd last chunk is padded as the whole clip."""
    from dycoke_cli import engine

    lm = family(name)
    frames = read_frames(wide_clip, Sampling(frames=7))
    whole = encode_frames(lm, wide_clip, frames)
    monkeypatch.setattr(engine, "CHUNK_FRAMES", 2)
    chunked = encode_frames(lm, wide_clip, frames)
    a, b = whole.features, chunked.features
    assert a.tokens.shape == b.tokens.shape and (a.tokens - b.tokens).abs().max() < 1e-5
    assert a.extras.keys() == b.extras.keys()
    assert all((a.extras[k] - b.extras[k]).abs().max() < 1e-5 for k in a.extras)
    assert (a.times, a.grid, a.meta) == (b.times, b.grid, b.meta)
    assert (a.trailing is None) == (b.trailing is None) and (a.trailing is None or torch.equal(a.trailing, b.trailing))
    assert whole.stats.frame_timestamps == chunked.stats.frame_timestamps == [round(t, 4) for t in frames.timestamps]
