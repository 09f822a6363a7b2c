"""One video encoded once, questions answered against it.

The engine knows nothing about terminals or files of answers: it takes a loaded model, a video and
settings, and returns plain `Answer` objects. Its shape follows DyCoke's split:

  encode_video   decode frames -> preprocess -> vision tower        (independent of compression)
  Session        TTM on the encoded tokens (once per setting), then per question: prompt -> prefill
                 -> decode under DP, streaming text through a callback.

A Session keeps the KV cache of its last generation. The video's tokens come before the question in
the prompt and TTM does not look at the question, so the next question's prompt shares the whole
[prefix + video] head with the cached one: the cache is cropped back to the longest common prefix and
only the new tokens are prefilled. Chat turns extend the same cache.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from dycoke_cli.compress import kv, ttm
from dycoke_cli.models import LoadedModel
from dycoke_cli.models.base import VideoFeatures
from dycoke_cli.settings import Compression, Generation
from dycoke_cli.stats import Stats, VideoStats, peak_memory, reset_peak_memory, synchronize, timed
from dycoke_cli.video import Frames, Sampling, read_frames


@dataclass
class EncodedVideo:
    """A video's vision tokens before compression, reusable across compression settings."""

    path: Path
    features: VideoFeatures
    stats: VideoStats


@dataclass
class Answer:
    question: str
    text: str
    token_ids: list[int]
    stats: Stats
    logits: list[torch.Tensor] | None = None  # (1, V) per generated token, only when asked for


def encode_video(lm: LoadedModel, path: str | Path, sampling: Sampling = Sampling()) -> EncodedVideo:
    """Decode the sampled frames and run the vision tower once: the compression-independent half."""
    started = time.perf_counter()
    frames = read_frames(path, sampling)
    return encode_frames(lm, path, frames, time.perf_counter() - started)


def encode_frames(lm: LoadedModel, path: str | Path, frames: Frames, decode_s: float) -> EncodedVideo:
    """Preprocess already decoded frames and run the vision tower (the CLI decodes first, so a bad
    video is reported before the slow model load)."""
    reset_peak_memory(lm.device)
    times: dict[str, float] = {"video_decode_s": decode_s}
    with timed(lm.device, times, "preprocess_s"):
        pixels = lm.adapter.preprocess(frames.pixels)  # (1, F, 3, S, S)
    with timed(lm.device, times, "vision_encode_s"):
        features = lm.adapter.encode(pixels)
    count, per_frame = features.tokens.shape[:2]
    stats = VideoStats(
        frames=count, frame_timestamps=[round(t, 4) for t in frames.timestamps], tokens_per_frame=per_frame,
        visual_tokens_before=count * per_frame, warnings=list(frames.warnings), **times,
    )
    return EncodedVideo(path=Path(path), features=features, stats=stats)


class Session:
    """Answers questions about one encoded video under one compression setting."""

    def __init__(self, lm: LoadedModel, video: EncodedVideo, compression: Compression = Compression(),
                 reuse_prefix: bool = True):
        self.lm = lm
        self.video = video
        self.compression = compression.validate(lm.model.config.get_text_config().num_hidden_layers)
        self.reuse_prefix = reuse_prefix
        self.history: list[tuple[str, str]] = []  # chat turns so far
        self._cache = None  # KV cache of the last generation
        self._cached_ids: list[int] = []  # the tokens whose keys/values that cache holds
        self._video_charged = False  # the first answer's total includes encoding the video
        self._full_prefill: tuple[int, float] | None = None  # (tokens, seconds) of the last full prefill
        self.video_stats, self.video_tokens = self._compress(video)
        if compression.kv_p > 0:
            kv.enable(lm.model)

    def _compress(self, video: EncodedVideo) -> tuple[VideoStats, torch.Tensor]:
        tokens = video.features.tokens  # (F, T, D)
        times: dict[str, float] = {}
        with timed(self.lm.device, times, "ttm_s"):
            keep = ttm.ttm_keep_indices(tokens, self.compression.ttm_k, self.compression.ttm_variant)
            kept = tokens.flatten(0, 1)[keep.to(tokens.device)]  # (N, D)
        stats = replace(video.stats, visual_tokens_after=kept.shape[0], ttm_s=times["ttm_s"])
        if video.features.newline is not None:
            kept = torch.cat([kept, video.features.newline], dim=0)  # (N + 1, D)
        return stats, kept

    def ask(self, question: str, generation: Generation = Generation(),
            on_text: Callable[[str], None] | None = None, keep_logits: bool = False) -> Answer:
        """Answer one question on its own (earlier questions are not part of its prompt)."""
        return self._answer([(question, None)], generation, on_text, keep_logits)

    def chat(self, question: str, generation: Generation = Generation(),
             on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer a question as the next turn of the conversation, which it then joins."""
        answer = self._answer(self.history + [(question, None)], generation, on_text, False)
        self.history.append((question, answer.text))
        return answer

    def reset(self) -> None:
        """Forget the conversation; the cached video prefix stays."""
        self.history.clear()

    def _answer(self, turns, generation, on_text, keep_logits) -> Answer:
        adapter, model, device = self.lm.adapter, self.lm.model, self.lm.device
        start = time.perf_counter()
        if self._video_charged:
            reset_peak_memory(device)
        prompt = adapter.prompt(turns, video_tokens=self.video_tokens.shape[0])
        reused = self._reusable_prefix(prompt.ids, prompt.video_span[1])
        inputs = {"past_key_values": self._prepare_cache(reused)}
        if not reused:
            inputs.update(adapter.generate_inputs(self.video_tokens))
        streamer = _Streamer(adapter.decode, on_text, device)
        visual = (prompt.video_span[0], prompt.video_span[0] + self.video_stats.visual_tokens_after)
        with _pruning(self.compression, visual) as pruner:
            out = model.generate(
                input_ids=torch.tensor([prompt.ids], device=model.device),
                attention_mask=torch.ones(1, len(prompt.ids), dtype=torch.long, device=model.device),
                streamer=streamer, **inputs, **_sampling_kwargs(generation, adapter),
                return_dict_in_generate=True, output_logits=keep_logits,
            )
        synchronize(device)
        end = time.perf_counter()
        ids = out.sequences[0, len(prompt.ids):].tolist()
        self._remember(out.past_key_values, prompt.ids + ids)
        stats = self._stats(prompt.ids, ids, reused, pruner, streamer, start, end)
        return Answer(question=turns[-1][0], text=adapter.decode(ids), token_ids=ids, stats=stats,
                      logits=list(out.logits) if keep_logits else None)

    def _reusable_prefix(self, ids: list[int], video_end: int) -> int:
        """How many leading tokens of `ids` the cache already holds (0 unless the video is among them)."""
        if not self.reuse_prefix or self._cache is None:
            return 0
        common = 0
        for a, b in zip(self._cached_ids, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # generate needs at least one new token to run
        return common if common >= video_end else 0

    def _prepare_cache(self, reused: int):
        from transformers import DynamicCache

        if not reused:
            self._cache, self._cached_ids = None, []
            return DynamicCache(config=self.lm.model.config)
        surplus = self._cache.get_seq_length() - reused
        if surplus > 0:
            self._cache.crop(-surplus)
        return self._cache

    def _remember(self, cache, tokens: list[int]) -> None:
        if self.reuse_prefix:
            self._cache = cache
            self._cached_ids = tokens[: cache.get_seq_length()]

    def _stats(self, prompt_ids, ids, reused, pruner, streamer, start, end) -> Stats:
        lm = self.lm
        prefill_s = (streamer.first_token_at or end) - start
        if not reused:
            self._full_prefill = (len(prompt_ids), prefill_s)
        saved = reused / self._full_prefill[0] * self._full_prefill[1] if reused and self._full_prefill else 0.0
        total = end - start
        video_reused = self._video_charged
        if not self._video_charged:
            v = self.video_stats
            total += v.video_decode_s + v.preprocess_s + v.vision_encode_s + v.ttm_s
            self._video_charged = True
        full = len(prompt_ids) + max(0, len(ids) - 1)
        steps = max(0, len(ids) - 1)
        attended = pruner.attended if pruner is not None and pruner.attended else [
            len(prompt_ids) + i for i in range(1, steps + 1)
        ]
        return Stats(
            model=lm.source.spec, family=lm.adapter.family, quantization=lm.quant, device=lm.device,
            dtype=lm.dtype, random_weights=lm.source.random_weights, video=self.video_stats, video_reused=video_reused,
            prompt_tokens=len(prompt_ids), prefix_reused_tokens=reused, prefill_tokens=len(prompt_ids) - reused,
            prefill_saved_s=saved,
            generated_tokens=len(ids), kv_entries_full=full,
            kv_entries_attended_mean=sum(attended) / len(attended) if attended else 0.0,
            dp_steps_selected=getattr(pruner, "selected", 0),
            dp_steps_reused=getattr(pruner, "reused", 0),
            dp_steps_full=getattr(pruner, "full", 0),
            prefill_s=prefill_s, decode_s=end - start - prefill_s, total_s=total,
            memory=peak_memory(lm.device),
        )


def _pruning(compression: Compression, visual_span: tuple[int, int]):
    """DP around one generate call when enabled; the context yields the pruner, or None."""
    if compression.kv_p == 0:
        return nullcontext()
    config = kv.DPConfig(p=compression.kv_p, layer=compression.kv_layer, gate=compression.kv_gate)
    return kv.pruning(config, visual_span)


def _sampling_kwargs(generation: Generation, adapter) -> dict:
    eos = adapter.eos_token_ids
    kwargs = dict(max_new_tokens=generation.max_new_tokens, min_new_tokens=generation.min_new_tokens,
                  eos_token_id=eos, pad_token_id=adapter.tokenizer.pad_token_id or eos[0])
    if generation.temperature > 0:
        torch.manual_seed(generation.seed)
        kwargs.update(do_sample=True, temperature=generation.temperature, top_p=generation.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


@dataclass
class _Streamer:
    """Receives token ids from `generate`, notes when the first arrives, emits text deltas."""

    decode: Callable[[list[int]], str]
    on_text: Callable[[str], None] | None
    device: str
    first_token_at: float | None = None
    _prompt_seen: bool = False
    _ids: list[int] = field(default_factory=list)
    _emitted: int = 0

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first echoes the prompt
            self._prompt_seen = True
            return
        if self.first_token_at is None:
            synchronize(self.device)
            self.first_token_at = time.perf_counter()
        self._ids.extend(value.reshape(-1).tolist())
        if self.on_text is not None:
            text = self.decode(self._ids)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                self.on_text(text[self._emitted:])
                self._emitted = len(text)

    def end(self) -> None:
        if self.on_text is not None:
            text = self.decode(self._ids)
            if len(text) > self._emitted:
                self.on_text(text[self._emitted:])
                self._emitted = len(text)
