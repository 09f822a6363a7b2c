"""One video encoded once, questions answered against it.

The engine knows nothing about terminals or files of answers: it takes a loaded model, a video and
a compression method, and returns plain `Answer` objects. Its shape follows where methods act:

  encode_frames  frames -> [method's frame subset] -> preprocess -> vision tower     (once per video)
  Session        [method's selection before prefill] on the encoded tokens           (once per setting)
                 then per question: prompt -> prune -> prefill -> decode, with the method's attention
                 hook inside the language model, streaming text through a callback.

A Session keeps the KV cache of its last generation. The video's tokens come before the question in
the prompt and a selection made before prefill does not look at the question, so the next question's
prompt shares the whole [prefix + video] head with the cached one: the cache is cropped back to the
longest common prefix and only the new tokens are prefilled. Chat turns extend the same cache. A
method whose prefill depends on the question (FastV) prefills every question in full.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from dycoke_cli.compress import attention
from dycoke_cli.compress.base import Method
from dycoke_cli.compress.spec import CompressionSpec
from dycoke_cli.models import LoadedModel
from dycoke_cli.models.base import VideoFeatures
from dycoke_cli.settings import Generation
from dycoke_cli.stats import Stats, VideoStats, peak_memory, reset_peak_memory, synchronize, timed
from dycoke_cli.video.frames import Frames, Sampling

DEFAULT_COMPRESSION = CompressionSpec("dycoke")


@dataclass
class EncodedVideo:
    """A video's vision tokens before selection, reusable across every method that encodes the same frames.

    `frames` are the decoded frames it came from (before any method's subset), kept so that a Session
    whose method encodes fewer frames (uniform) can encode its own subset; `subset` says which were encoded.
    """

    path: Path
    features: VideoFeatures
    stats: VideoStats
    frames: Frames | None = None
    subset: list[int] | None = None


@dataclass
class Answer:
    question: str
    text: str
    token_ids: list[int]
    stats: Stats
    logits: list[torch.Tensor] | None = None  # (1, V) per generated token, only when asked for


def as_method(compression: str | CompressionSpec | Method | None) -> Method:
    """A method instance from a spec string (`dycoke:k=0.5`), a parsed spec, or an instance as is."""
    if compression is None:
        return DEFAULT_COMPRESSION.build()
    if isinstance(compression, str):
        from dycoke_cli.compress.spec import parse_spec

        compression = parse_spec(compression)
    return compression.build() if isinstance(compression, CompressionSpec) else compression


def frame_subset(lm: LoadedModel, frames: Frames, method: Method) -> list[int] | None:
    """The decoded frames a method wants encoded (None: all), e.g. `uniform`'s fewer frames."""
    count, height, width = frames.pixels.shape[:3]
    subset = method.frame_subset(count, lm.adapter.frame_tokens(height, width, count), lm.adapter.group)
    return None if subset is None or len(subset) == len(frames.timestamps) else subset


def encode_video(lm: LoadedModel, path: str | Path, sampling: Sampling = Sampling(),
                 compression: str | CompressionSpec | Method | None = None) -> EncodedVideo:
    """Decode the sampled frames and run the vision tower once: the question-independent half."""
    from dycoke_cli.video.reader import read_frames

    started = time.perf_counter()
    frames = read_frames(path, sampling)
    return encode_frames(lm, path, frames, time.perf_counter() - started, compression)


def encode_frames(lm: LoadedModel, path: str | Path, frames: Frames, decode_s: float,
                  compression: str | CompressionSpec | Method | None = None) -> EncodedVideo:
    """Preprocess already decoded frames and run the vision tower (the CLI decodes first, so a bad
    video is reported before the slow model load)."""
    decoded = frames
    subset = frame_subset(lm, frames, as_method(compression)) if compression is not None else None
    if subset is not None:
        frames = frames.subset(subset)
    reset_peak_memory(lm.device)
    times: dict[str, float] = {"video_decode_s": decode_s}
    with timed(lm.device, times, "preprocess_s"):
        pixels = lm.adapter.preprocess(frames)
    with timed(lm.device, times, "vision_encode_s"):
        features = lm.adapter.encode(pixels)
    per_frame = features.tokens.shape[1]
    groups = -(-len(decoded.timestamps) // features.group)  # of all decoded frames: what a subset saves counts
    stats = VideoStats(
        frames=len(frames.timestamps), frame_timestamps=[round(t, 4) for t in frames.timestamps],
        tokens_per_frame=per_frame, frames_per_group=features.group, visual_tokens_before=groups * per_frame,
        warnings=list(frames.warnings), **times,
    )
    return EncodedVideo(path=Path(path), features=features, stats=stats, frames=decoded, subset=subset)


def _frames_for(lm: LoadedModel, video: EncodedVideo, method: Method) -> EncodedVideo:
    """The encoding of the frames this method wants: `video` itself, or (for a method that encodes fewer
    frames than the video was encoded with) an encoding of that subset of its decoded frames."""
    if video.frames is None:
        return video
    wanted = frame_subset(lm, video.frames, method)
    if wanted == video.subset:
        return video
    return encode_frames(lm, video.path, video.frames, video.stats.video_decode_s, method)


@dataclass
class KeptVideo:
    """A video after the method's selection: what every question's prefill receives."""

    keep: torch.Tensor  # (N,) flat indices into F*T: the position each kept row sits at
    tokens: torch.Tensor  # (N, D)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N, D')
    counters: dict = field(default_factory=dict)


def apply_selection(features: VideoFeatures, method: Method) -> KeptVideo:
    """Run the method's selection and gather (or average, for merged clusters) every feature level."""
    flat = features.tokens.flatten(0, 1)  # (F*T, D)
    selection = method.select(features.tokens, features.layout())
    if selection is None:
        keep = torch.arange(flat.shape[0], device=flat.device)
        return KeptVideo(keep=keep, tokens=flat, extras={k: v.flatten(0, 1) for k, v in features.extras.items()})
    keep = selection.keep.to(flat.device).long()
    _check_frame_order(keep, features.tokens.shape[1])

    def gather(x: torch.Tensor) -> torch.Tensor:  # (F*T, D') -> (N, D')
        if selection.merge is None:
            return x[keep]
        return _cluster_means(x, selection.merge.to(x.device), keep.numel())

    return KeptVideo(keep=keep, tokens=gather(flat), counters=dict(selection.counters),
                     extras={name: gather(x.flatten(0, 1)) for name, x in features.extras.items()})


def _check_frame_order(keep: torch.Tensor, per_frame: int) -> None:
    """A frame's kept tokens must stay within its own run of the prompt (text may separate frames)."""
    frames = torch.div(keep, per_frame, rounding_mode="floor")
    if keep.numel() > 1 and bool((frames[1:] < frames[:-1]).any()):
        raise ValueError("a selection must list frames in temporal order")


def _cluster_means(x: torch.Tensor, merge: torch.Tensor, clusters: int) -> torch.Tensor:
    """(F*T, D') rows averaged per cluster id (-1 = dropped) -> (clusters, D'), in x's dtype."""
    member = merge >= 0
    sums = torch.zeros(clusters, x.shape[1], dtype=torch.float32, device=x.device)
    sums.index_add_(0, merge[member], x[member].float())
    counts = torch.bincount(merge[member], minlength=clusters).clamp(min=1).unsqueeze(1)
    return (sums / counts).to(x.dtype)


class Session:
    """Answers questions about one encoded video under one compression method."""

    def __init__(self, lm: LoadedModel, video: EncodedVideo, compression: str | CompressionSpec | Method | None = None,
                 reuse_prefix: bool = True, system: str | None = None):
        self.lm = lm
        self.method = as_method(compression)
        self.method.check_model(lm.adapter.text_config.num_hidden_layers, lm.adapter.min_prune_layer)
        self.video = video = _frames_for(lm, video, self.method)
        self.reuse_prefix = reuse_prefix and not self.method.question_dependent
        self.system = system
        self.history: list[tuple[str, str]] = []  # chat turns so far
        self.block = lm.adapter.video_block(video.features)
        self._cache = None  # KV cache of the last generation
        self._cached_ids: list[int] = []  # the tokens whose keys/values that cache holds
        self._video_charged = False  # the first answer's total includes encoding the video
        self._full_prefill: tuple[int, float] | None = None  # (tokens, seconds) of the last full prefill
        times: dict[str, float] = {}
        with timed(lm.device, times, "compress_s"):
            self.kept = apply_selection(video.features, self.method)
        self.video_stats = replace(video.stats, visual_tokens_after=self.kept.tokens.shape[0],
                                   compress_s=times["compress_s"])

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

    def discard_cache(self) -> None:
        """Forget the cached keys and values (after an interrupted generate left them half-extended);
        the encoded video stays, so the next question prefills but does not re-encode."""
        self._cache, self._cached_ids = None, []

    def prompt(self, turns: list[tuple[str, str | None]]):
        """The pruned prompt of a conversation: what is prefilled."""
        full = self.lm.adapter.prompt(turns, self.block, self.video.features, self.system)
        return full.prune(self.kept.keep)

    def _answer(self, turns, generation, on_text, keep_logits) -> Answer:
        adapter, model, device = self.lm.adapter, self.lm.model, self.lm.device
        start = time.perf_counter()
        if self._video_charged:
            reset_peak_memory(device)
        prompt = self.prompt(turns)
        reused = self._reusable_prefix(prompt.ids, prompt.video_end)
        inputs = {"cache": self._prepare_cache(reused)}
        if reused:
            inputs.update(adapter.continue_inputs(prompt, reused))
        else:
            inputs.update(adapter.generate_inputs(self.kept.tokens, self.kept.extras, self.video.features, prompt))
        streamer = _Streamer(adapter.decode, on_text, device)
        context = attention.HookContext(visual=prompt.visual, prompt_length=len(prompt.ids),
                                        layers=adapter.text_config.num_hidden_layers)
        hook = self.method.attention(context)
        with attention.active(model, adapter.text_layers() if hook else [], hook), self.lm.generating():
            out = model.generate(
                input_ids=torch.tensor([prompt.ids], device=model.device),
                attention_mask=torch.ones(1, len(prompt.ids), dtype=torch.long, device=model.device),
                streamer=streamer, **inputs, **_sampling_kwargs(generation, adapter),
                return_dict_in_generate=True, output_logits=keep_logits,
            )
        synchronize(device)
        end = time.perf_counter()
        ids = out.sequences[0, len(prompt.ids):].tolist()
        self._remember(out.cache, prompt.ids + ids)
        stats = self._stats(prompt.ids, ids, reused, hook, streamer, start, end)
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

    def _stats(self, prompt_ids, ids, reused, hook, streamer, start, end) -> Stats:
        lm = self.lm
        prefill_s = (streamer.first_token_at or end) - start
        if not reused:
            self._full_prefill = (len(prompt_ids), prefill_s)
        saved = reused / self._full_prefill[0] * self._full_prefill[1] if reused and self._full_prefill else 0.0
        total = end - start
        video_reused = self._video_charged
        if not self._video_charged:
            v = self.video_stats
            total += v.video_decode_s + v.preprocess_s + v.vision_encode_s + v.compress_s
            self._video_charged = True
        steps = max(0, len(ids) - 1)
        attended = hook.attended if hook is not None and hook.attended else [
            len(prompt_ids) + i for i in range(1, steps + 1)
        ]
        counters = {**self.kept.counters, **(hook.counters() if hook is not None else {})}
        budget = self.method.budget
        return Stats(
            model=lm.source.spec, family=lm.adapter.family, quantization=lm.quant, device=lm.device,
            dtype=lm.dtype, random_weights=lm.source.random_weights, video=self.video_stats,
            compression={"method": self.method.name, "params": self.method.effective(),
                         "budget": None if budget is None else budget.value, "counters": counters},
            video_reused=video_reused, load_s=lm.take_load_time(),
            prompt_tokens=len(prompt_ids), prefix_reused_tokens=reused, prefill_tokens=len(prompt_ids) - reused,
            prefill_saved_s=saved, generated_tokens=len(ids), kv_entries_full=len(prompt_ids) + steps,
            kv_entries_attended_mean=sum(attended) / len(attended) if attended else 0.0,
            prefill_s=prefill_s, decode_s=end - start - prefill_s, total_s=total, memory=peak_memory(lm.device),
        )


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
