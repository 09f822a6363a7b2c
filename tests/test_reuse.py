"""Follow-up questions reuse the [prefix + video] KV cache and must answer exactly as from scratch."""

from __future__ import annotations

import pytest
import torch

from dycoke_cli.engine import Session, encode_video
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling
from conftest import llava_prompt

QUESTIONS = ["What happens in this video?", "What colour is the bar?", "Is anything moving?"]
SIX = Generation(max_new_tokens=6, min_new_tokens=6)


@pytest.fixture(scope="module")
def video(tiny, clip):
    return encode_video(tiny, clip, Sampling(frames=4))


@pytest.mark.parametrize("compression", [parse_spec("none"), parse_spec("dycoke")], ids=["off", "dycoke"])
def test_reuse_equals_answering_from_scratch(tiny, video, compression):
    reusing = Session(tiny, video, compression, reuse_prefix=True)
    answers = [reusing.ask(q, SIX, keep_logits=True) for q in QUESTIONS]
    for question, answer in zip(QUESTIONS, answers):
        fresh = Session(tiny, video, compression, reuse_prefix=False).ask(question, SIX, keep_logits=True)
        assert answer.token_ids == fresh.token_ids
        assert torch.allclose(torch.stack(answer.logits), torch.stack(fresh.logits), atol=1e-4)
    # The first question pays for the whole prompt; each follow-up reuses exactly the head its prompt
    # shares with the previous one (which covers the whole video) and prefills only the rest.
    n_video = answers[0].stats.video.visual_tokens_after + 1
    prompts = [llava_prompt(tiny, q, n_video) for q in QUESTIONS]
    assert answers[0].stats.prefix_reused_tokens == 0
    for (previous, _), (prompt, start), answer in zip(prompts, prompts[1:], answers[1:]):
        shared = next(i for i, (a, b) in enumerate(zip(previous, prompt)) if a != b)
        assert shared >= start + n_video
        assert answer.stats.prefix_reused_tokens == shared
        assert answer.stats.prefill_tokens == len(prompt) - shared
        first = answers[0].stats
        assert answer.stats.prefill_saved_s == shared / first.prompt_tokens * first.prefill_s


def test_chat_turn_sees_earlier_turns(tiny, video):
    chatting = Session(tiny, video, parse_spec("dycoke"))
    first = chatting.chat(QUESTIONS[0], SIX)
    second = chatting.chat(QUESTIONS[1], SIX)
    assert chatting.history == [(QUESTIONS[0], first.text), (QUESTIONS[1], second.text)]
    # The same conversation rebuilt from its text, on a session that never cached anything.
    rebuilt = Session(tiny, video, parse_spec("dycoke"), reuse_prefix=False)
    rebuilt.history = [(QUESTIONS[0], first.text)]
    assert rebuilt.chat(QUESTIONS[1], SIX).token_ids == second.token_ids
    # The second turn's prompt holds the first turn, so it is longer than the question asked alone.
    alone = Session(tiny, video, parse_spec("dycoke")).ask(QUESTIONS[1], SIX)
    assert second.stats.prompt_tokens > alone.stats.prompt_tokens
    assert second.stats.prefix_reused_tokens > 0
    chatting.reset()
    assert chatting.chat(QUESTIONS[1], SIX).token_ids == alone.token_ids
