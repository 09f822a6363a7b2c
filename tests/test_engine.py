"""The engine against plain transformers: compression off must be generate() itself; TTM and DP
change exactly the token counts they promise; a Session reuses one encoding and its KV prefix."""

from __future__ import annotations

import pytest
import torch

from dycoke_cli.compress.ttm import ttm_kept_count
from dycoke_cli.engine import Session, encode_video
from dycoke_cli.models.base import Clip
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling, read_frames
from conftest import llava_prompt

QUESTION = "What happens in this video?"
EIGHT = Generation(max_new_tokens=8, min_new_tokens=8)


def reference_generate(lm, clip, frames: int, new_tokens: int):
    """Plain transformers: pixel values straight into generate(), no precomputed features."""
    adapter = lm.adapter
    decoded = read_frames(clip, Sampling(frames=frames))
    clip_info = Clip(tuple(decoded.timestamps), decoded.duration)
    pixels = adapter.preprocess(decoded, clip_info).values  # (1, F, 3, 384, 384)
    per_frame = (adapter.model.config.vision_config.image_size // 14 + 1) // 2
    ids, _ = llava_prompt(lm, QUESTION, frames * per_frame * per_frame + 1)
    out = lm.model.generate(
        input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        pixel_values_videos=pixels, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        return_dict_in_generate=True, output_logits=True,
    )
    return out.sequences[0, len(ids):].tolist(), torch.stack(out.logits)


def test_no_compression_equals_plain_generate(tiny, clip):
    session = Session(tiny, encode_video(tiny, clip, Sampling(frames=4)), parse_spec("none"))
    answer = session.ask(QUESTION, EIGHT, keep_logits=True)
    ref_tokens, ref_logits = reference_generate(tiny, clip, frames=4, new_tokens=8)
    assert answer.token_ids == ref_tokens
    assert len(set(ref_tokens)) > 2, "greedy output is degenerate: the comparison would prove little"
    assert torch.equal(torch.stack(answer.logits), ref_logits)


def test_384px_gives_196_tokens_per_frame_and_ttm_counts(tiny, long_clip):
    video = encode_video(tiny, long_clip, Sampling(frames=32))
    assert video.features.tokens.shape == (32, 196, 64)
    assert video.features.trailing.shape == (1, 64)
    for variant, kept in [("clean", 2960), ("reference", 3098)]:
        session = Session(tiny, video, parse_spec(f"dycoke:k=0.7,variant={variant},p=0"))
        stats = session.ask(QUESTION, Generation(max_new_tokens=2, min_new_tokens=2)).stats
        assert (stats.video.visual_tokens_before, stats.video.visual_tokens_after) == (6272, kept)
        prompt_without_video = len(llava_prompt(tiny, QUESTION, 0)[0])
        assert stats.prompt_tokens == prompt_without_video + kept + 1  # + the newline


def test_ttm_feeds_the_kept_tokens_in_order(tiny, clip):
    """The prompt the LM sees under TTM equals plain generate() fed the same kept rows by hand."""
    video = encode_video(tiny, clip, Sampling(frames=8))
    session = Session(tiny, video, parse_spec("dycoke:k=0.5,p=0"))
    answer = session.ask(QUESTION, EIGHT, keep_logits=True)
    from dycoke_cli.compress.ttm import ttm_keep_indices

    tokens = video.features.tokens
    kept = torch.cat([tokens.flatten(0, 1)[ttm_keep_indices(tokens, 0.5)], video.features.trailing])
    assert kept.shape[0] == ttm_kept_count(8, 196, 0.5) + 1
    ids, start = llava_prompt(tiny, QUESTION, kept.shape[0])
    embeds = tiny.model.get_input_embeddings()(torch.tensor([ids]))
    embeds[0, start:start + kept.shape[0]] = kept
    out = tiny.model.generate(inputs_embeds=embeds, attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=8, min_new_tokens=8, do_sample=False,
                              return_dict_in_generate=True, output_logits=True)
    assert answer.token_ids == out.sequences[0].tolist()
    assert torch.allclose(torch.stack(answer.logits), torch.stack(out.logits), atol=1e-5)


def test_dp_attends_the_promised_number_of_entries(tiny, clip):
    video = encode_video(tiny, clip, Sampling(frames=4))
    session = Session(tiny, video, parse_spec("dycoke:k=0,p=0.7"))
    stats = session.ask(QUESTION, EIGHT).stats
    visual = 4 * 196
    kept_visual = int(visual * (1 - 0.7))
    # Every decode step prunes (gate "reuse" never falls back to the full cache): at step i the cache
    # holds prompt + i tokens, of which `visual` are video tokens and `kept_visual` of those are attended.
    expected = [stats.prompt_tokens + i - visual + kept_visual for i in range(1, 8)]
    assert stats.kv_entries_attended_mean == sum(expected) / len(expected)
    counters = stats.compression["counters"]
    assert counters["dp_steps_selected"] + counters["dp_steps_reused"] == 7 and counters["dp_steps_full"] == 0
    assert stats.kv_entries_full == stats.prompt_tokens + 7


def test_dp_p0_is_identical_to_no_dp(tiny, clip):
    video = encode_video(tiny, clip, Sampling(frames=4))
    plain = Session(tiny, video, parse_spec("none")).ask(QUESTION, EIGHT, keep_logits=True)
    p0 = Session(tiny, video, parse_spec("dycoke:k=0,p=0")).ask(QUESTION, EIGHT, keep_logits=True)
    assert plain.token_ids == p0.token_ids
    assert torch.equal(torch.stack(plain.logits), torch.stack(p0.logits))


def test_vision_tower_runs_once_per_session(tiny, clip, monkeypatch):
    calls = []
    original = tiny.model.model.get_video_features
    monkeypatch.setattr(tiny.model.model, "get_video_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    session = Session(tiny, encode_video(tiny, clip, Sampling(frames=4)))
    for question in ["one?", "two?", "three?"]:
        session.ask(question, Generation(max_new_tokens=2))
    assert len(calls) == 1


def test_a_method_that_encodes_fewer_frames_decodes_them_from_the_file(tiny, clip):
    """No decoded frame is kept after encoding: a `uniform` Session on a full encoding decodes its own
    subset again, and answers exactly as if the video had been encoded for it in the first place."""
    from dycoke_cli.errors import BadInputError
    from dycoke_cli.engine import encode_frames

    full = encode_video(tiny, clip, Sampling(frames=8))
    again = Session(tiny, full, "uniform:rate=0.5")
    planned = Session(tiny, encode_video(tiny, clip, Sampling(frames=8), "uniform:rate=0.5"), "uniform:rate=0.5")
    assert again.video.stats.frame_timestamps == planned.video.stats.frame_timestamps == [
        full.stats.frame_timestamps[i] for i in (1, 3, 5, 7)]
    assert torch.equal(again.video.features.tokens, planned.video.features.tokens)
    assert again.ask(QUESTION, EIGHT).token_ids == planned.ask(QUESTION, EIGHT).token_ids
    in_hand = encode_frames(tiny, clip, read_frames(clip, Sampling(frames=8)))
    with pytest.raises(BadInputError, match="needs its own encoding of this video"):
        Session(tiny, in_hand, "uniform:rate=0.5")


def test_should_stop_ends_the_answer_between_tokens_and_keeps_the_cache(tiny, clip):
    """Asked after every token: True on the third ask ends the answer there, with the first three
    tokens of the whole answer; the next question still reuses the cached prefix and answers as before."""
    video = encode_video(tiny, clip, Sampling(frames=4))
    whole = Session(tiny, video, parse_spec("dycoke")).ask(QUESTION, EIGHT)
    session = Session(tiny, video, parse_spec("dycoke"))
    asked = []
    stopped = session.ask(QUESTION, EIGHT, should_stop=lambda: asked.append(1) or len(asked) >= 3)
    assert stopped.token_ids == whole.token_ids[:3] and len(asked) == 3
    again = session.ask(QUESTION, EIGHT)
    assert again.token_ids == whole.token_ids and again.stats.prefix_reused_tokens > 0
