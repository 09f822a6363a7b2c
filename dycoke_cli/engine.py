"""One video encoded once, questions answered against it.

The engine knows nothing about terminals or files of answers: it takes a loaded model, a video and
a compression method, and returns plain `Answer` objects. Its shape follows where methods act:

  encode         the plan's frames -> preprocess -> vision tower, a chunk of frames at a time, so
                 neither the decoded frames nor the tower's activations grow with the frame count;
                 no decoded frame is kept afterwards                                 (once per video)
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from dycoke_cli.compress import attention
from dycoke_cli.compress.base import EncoderCells, Method, VisualLayout
from dycoke_cli.compress.spec import CompressionSpec
from dycoke_cli.errors import BadInputError
from dycoke_cli.models import LoadedModel
from dycoke_cli.models.base import Clip, VideoFeatures
from dycoke_cli.plan import Plan, build_method, check_method, plan_sampled
from dycoke_cli.generate_call import Streamer, finish_reason, sampling_kwargs, stopping_criteria
from dycoke_cli.selection import apply_selection
from dycoke_cli.settings import Generation
from dycoke_cli.stats import VIDEO_STAGES, Stats, VideoStats, peak_memory, reset_peak_memory, synchronize, timed
from dycoke_cli.video.frames import Frames, Sampling, SamplingRequest

DECODE_FRAMES = 64  # frames decoded at once: enough for the decoder's workers to share, few seeks
CHUNK_FRAMES = 16  # frames preprocessed and run through the tower at once


@dataclass
class EncodedVideo:
    """A video's vision tokens before selection, reusable across every method that encodes the same frames.

    sampled: the layout of every sampled frame, before any method's frame subset (what a method's
    parameters are solved on); subset: which of those were encoded (None: all); plan: the plan it was
    encoded for, so that a Session whose method encodes another subset can plan and encode that one
    (None when the frames were handed in); cache: the video cache it went through, which that second
    encoding goes through too (None: none).
    """

    path: Path
    features: VideoFeatures
    stats: VideoStats
    sampled: VisualLayout
    subset: tuple[int, ...] | None = None
    plan: Plan | None = None
    cache: object | None = None  # cache.VideoCache
    encoder: tuple | None = None  # the selection inside the tower it was made with (Method.encoding_settings)


@dataclass
class Answer:
    question: str
    text: str
    token_ids: list[int]
    stats: Stats
    logits: list[torch.Tensor] | None = None  # (1, V) per generated token, only when asked for
    hook: attention.AttentionHook | None = None  # the method's attention hook of this answer: what it attended


def encode(lm: LoadedModel, plan: Plan, cache=None, content: dict | None = None) -> EncodedVideo:
    """Decode the plan's frames and run the vision tower on them, a chunk at a time (in two halves
    around the method's selection when it acts inside the tower). With a video cache
    (cache.VideoCache), an encoding of the same frames by the same model is read from it instead, and
    a new one is stored in it; the stats say which (`video_source`). `content`: what the video's bytes
    are known by when its path says nothing lasting (a server's temporary copy of sent bytes:
    {"sha256": ...}); None: the file as cache/key.py identifies it."""
    lookup = cache.find(lm, plan, content) if cache is not None else None
    if lookup is not None and lookup.hit is not None:
        video = EncodedVideo(path=plan.video, features=lookup.hit.features, stats=lookup.hit.stats,
                             sampled=plan.layout, subset=plan.subset, plan=plan,
                             encoder=plan.method.encoding_settings())
    else:
        video = _encode_planned(lm, plan)
        if lookup is not None:
            video.stats.cache_read_s = lookup.seconds
            video.stats.cache_write_s = cache.store(lookup, video.features, video.stats)
    video.cache = cache
    video.stats.warnings = list(plan.notes) + video.stats.warnings  # the plan's, never stored with the video
    return video


def _encode_planned(lm: LoadedModel, plan: Plan) -> EncodedVideo:
    """Encode the frames the plan names, decoded DECODE_FRAMES at a time."""
    from dycoke_cli.video import decode_chunks

    frames = plan.frames
    clip = Clip(timestamps=tuple(frames.timestamps), duration=frames.index.end)
    chunks = decode_chunks(frames, _chunk_size(lm, DECODE_FRAMES))
    return _encode_chunks(lm, plan.video, chunks, clip, plan.layout, plan.subset, plan, [], plan.method)


def encode_frames(lm: LoadedModel, path: str | Path, frames: Frames, decode_s: float = 0.0,
                  compression: str | CompressionSpec | Method | None = None) -> EncodedVideo:
    """Preprocess frames already in hand (from anywhere: a GPU benchmark's synthetic frames, a test) and
    run the vision tower on them, a chunk at a time; a method's frame subset is taken from them."""
    height, width = frames.pixels.shape[1:3]
    sampled = lm.adapter.video_layout(frames.timestamps, (width, height))
    method = build_method(compression) if compression is not None else None
    subset = method.frame_subset(sampled) if method is not None else None
    if subset is not None:
        frames = frames.subset(subset)
    clip = Clip(timestamps=tuple(frames.timestamps), duration=frames.duration)
    video = _encode_chunks(lm, path, [(0, replace(frames, warnings=[]))], clip, sampled,
                           None if subset is None else tuple(subset), None, list(frames.warnings), method)
    video.stats.video_decode_s = decode_s
    return video


def encode_video(lm: LoadedModel, path: str | Path, sampling: Sampling | SamplingRequest = SamplingRequest(),
                 compression: str | CompressionSpec | Method | None = None, cache=False) -> EncodedVideo:
    """The Python API's one call: plan the video's frames (a `Sampling` as given, or a request resolved
    against the family's default), then decode and encode them. `compression` only matters for a method
    that encodes a subset of the frames (uniform) or selects inside the vision tower. `cache`: True
    reads and stores encodings in the video cache as the environment sets it up (DYCOKE_CACHE,
    DYCOKE_VIDEO_CACHE_SIZE), a cache.VideoCache uses that one; off by default, since the key knows the
    model by its files and cannot see a model changed in memory after loading."""
    from dycoke_cli.plan import plan_video
    from dycoke_cli.video import probe_video

    if cache is True:
        from dycoke_cli.cache import VideoCache

        cache = VideoCache.from_environment()
    request = sampling if isinstance(sampling, SamplingRequest) else SamplingRequest(
        frames=sampling.frames, fps=sampling.fps, max_frames=sampling.max_frames, start=sampling.start,
        end=sampling.end)
    return encode(lm, plan_video(probe_video(path), request, compression or "none", lm.adapter), cache or None)


def _chunk_size(lm: LoadedModel, frames: int) -> int:
    """`frames`, rounded down to a whole number of the family's temporal groups."""
    group = lm.adapter.group
    return max(group, frames // group * group)


def _timed_chunks(chunks: Iterable[tuple[int, Frames]], device: str, times: dict) -> Iterator[tuple[int, Frames]]:
    """The chunks, the time spent producing each (decoding) added to times["video_decode_s"]."""
    iterator = iter(chunks)
    while True:
        with timed(device, times, "video_decode_s"):
            item = next(iterator, None)
        if item is None:
            return
        yield item


def _encode_chunks(lm: LoadedModel, path, chunks, clip: Clip, sampled: VisualLayout, subset, plan,
                   notes: list[str], method: Method | None = None) -> EncodedVideo:
    """Run preprocessing and the tower CHUNK_FRAMES at a time over the decoded chunks; a position seen
    again (decoding restarted on a re-built index) replaces what it held. With a method that selects
    inside the tower, each chunk stops at its layer, the method chooses over the whole video, and the
    rest of the tower runs on what it kept."""
    adapter, device = lm.adapter, lm.device
    reset_peak_memory(device)
    layer = None if method is None else method.encoder_layer()
    step = _chunk_size(lm, CHUNK_FRAMES)
    times: dict[str, float] = {"video_decode_s": 0.0, "preprocess_s": 0.0, "vision_encode_s": 0.0}
    parts: dict[int, tuple[object, list[float]]] = {}  # position in the plan -> features (or state), timestamps
    warnings: dict[int, list[str]] = {}  # decoded chunk -> its warnings
    for start, decoded in _timed_chunks(chunks, device, times):
        if start == 0:
            parts.clear()
        warnings[start] = decoded.warnings
        for offset in range(0, len(decoded.timestamps), step):
            frames = decoded.subset(list(range(offset, min(offset + step, len(decoded.timestamps)))))
            with timed(device, times, "preprocess_s"):
                pixels = adapter.preprocess(frames, clip)
            with timed(device, times, "vision_encode_s"):
                with torch.no_grad():
                    encoded = adapter.encode(pixels) if layer is None else adapter.encode_to(pixels, layer)
                parts[start + offset] = (encoded, frames.timestamps)
            del pixels, frames
        del decoded  # only one decoded chunk is ever held
    ordered = [parts[start] for start in sorted(parts)]
    if layer is not None:
        with timed(device, times, "vision_encode_s"):
            ordered = _finish_tower(adapter, method, ordered)
    decoded = [t for _, timestamps in ordered for t in timestamps]
    features = VideoFeatures.join([f for f, _ in ordered], adapter.video_meta(replace(clip, timestamps=tuple(decoded))))
    warnings = notes + [w for start in sorted(warnings) for w in warnings[start]]
    stats = VideoStats(
        frames=len(decoded), frame_timestamps=[round(t, 4) for t in decoded],
        tokens_per_frame=features.tokens.shape[1], frames_per_group=features.group,
        visual_tokens_before=sampled.total, encoder_layer=layer,
        tower_patches=adapter.tower_patches(features.tokens.shape[1]), tower_patches_kept=list(features.patches_kept),
        warnings=warnings, **times,
    )
    return EncodedVideo(path=Path(path), features=features, stats=stats, sampled=sampled, subset=subset, plan=plan,
                        encoder=None if layer is None else method.encoding_settings())


@torch.no_grad()
def _finish_tower(adapter, method: Method, states: list[tuple[object, list[float]]]):
    """The encoder stage: every chunk's layer-j cells, the method's choice over the whole video, then
    the rest of the tower on each chunk's kept cells. (tower.TowerState, timestamps) -> (features, ...)."""
    cells = [adapter.tower_cells(state) for state, _ in states]  # ((f, C, K, D), weights, grid) each
    _, weights, grid = cells[0]
    hidden = torch.cat([c[0] for c in cells])  # (F, C, K, D)
    attention = torch.cat([adapter.tower_attention(state) for state, _ in states]) if method.reads_attention else None
    layout = VisualLayout(frames=hidden.shape[0], grid=grid, times=tuple(t for s, _ in states for t in s.times),
                          group=adapter.group)
    kept = torch.zeros(hidden.shape[0] * hidden.shape[1], dtype=torch.bool, device=hidden.device)
    chosen = method.select_cells(EncoderCells(hidden=hidden, weights=weights, layout=layout, attention=attention))
    kept[chosen.to(kept.device)] = True
    kept = kept.view(hidden.shape[:2])  # (F, C)
    del cells, hidden
    finished, first = [], 0
    for state, timestamps in states:
        finished.append((adapter.encode_from(state, kept[first:first + state.frames]), timestamps))
        first += state.frames
    return finished


def _encoding_for(lm: LoadedModel, video: EncodedVideo, method: Method) -> EncodedVideo:
    """The encoding this method wants: `video` itself, or (for a method that encodes another subset of
    the sampled frames, or selects inside the tower) that encoding's plan encoded, decoded from the
    file or read from the video cache `video` went through."""
    wanted = method.frame_subset(video.sampled)
    if (None if wanted is None else tuple(wanted)) == video.subset and method.encoding_settings() == video.encoder:
        return video
    if video.plan is None:
        raise BadInputError(f"'{method.name}' needs its own encoding of this video (other frames, or a selection "
                            "inside the vision tower); encode it from its file (encode_video) or with this method "
                            "(encode_frames(..., method))")
    return encode(lm, plan_sampled(video.plan.sampled, method, lm.adapter), video.cache)


class Session:
    """Answers questions about one encoded video under one compression method (a spec, a method, or
    the plan the video was encoded for)."""

    def __init__(self, lm: LoadedModel, video: EncodedVideo,
                 compression: str | CompressionSpec | Method | Plan | None = None, reuse_prefix: bool = True,
                 system: str | None = None):
        self.lm = lm
        if isinstance(compression, Plan):
            self.method, self.params = compression.method, compression.params
        else:
            self.method = build_method(compression)
            check_method(self.method, lm.adapter)
            self.params = self.method.solve(video.sampled)
        self.video = video = _encoding_for(lm, video, self.method)
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
            on_text: Callable[[str], None] | None = None, keep_logits: bool = False,
            should_stop: Callable[[], bool] | None = None) -> Answer:
        """Answer one question on its own (earlier questions are not part of its prompt).

        `should_stop` is asked between tokens (from the thread that generates): True ends the answer
        there, as if it had reached its length (a server's cancelled or timed-out request). The cache
        stays consistent, so the next question still reuses the prefix."""
        return self._answer([(question, None)], generation, on_text, keep_logits, should_stop)

    def chat(self, question: str, generation: Generation = Generation(),
             on_text: Callable[[str], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> Answer:
        """Answer a question as the next turn of the conversation, which it then joins."""
        answer = self._answer(self.history + [(question, None)], generation, on_text, False, should_stop)
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

    def _answer(self, turns, generation, on_text, keep_logits, should_stop=None) -> Answer:
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
        streamer = Streamer(adapter.decode, on_text, device)
        context = attention.HookContext(visual=prompt.visual, prompt_length=len(prompt.ids))
        hook = self.method.attention(context)
        with attention.active(model, adapter.text_layers(), hook, self.lm.attention), self.lm.generating():
            out = model.generate(
                input_ids=torch.tensor([prompt.ids], device=model.device),
                attention_mask=torch.ones(1, len(prompt.ids), dtype=torch.long, device=model.device),
                streamer=streamer, **inputs, **sampling_kwargs(generation, adapter),
                stopping_criteria=stopping_criteria(should_stop), return_dict_in_generate=True, output_logits=keep_logits,
            )
        synchronize(device)
        end = time.perf_counter()
        ids = out.sequences[0, len(prompt.ids):].tolist()
        self._remember(out.cache, prompt.ids + ids)
        stats = self._stats(prompt.ids, ids, reused, hook, streamer, start, end)
        stats.finish_reason = finish_reason(ids, adapter.eos_token_ids, generation.max_new_tokens)
        return Answer(question=turns[-1][0], text=adapter.decode(ids), token_ids=ids, stats=stats,
                      logits=list(out.logits) if keep_logits else None, hook=hook)

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
            total += sum(getattr(self.video_stats, key) for key in VIDEO_STAGES)
            self._video_charged = True
        steps = max(0, len(ids) - 1)
        full = [len(prompt_ids) + i for i in range(1, steps + 1)]  # the cache length at each decode step
        attended = hook.attended if hook is not None and hook.attended else full
        deeper = hook.visual_kept() if hook is not None else None  # (layer, tokens) of a pruning inside the LM
        counters = {**self.kept.counters, **(hook.counters() if hook is not None else {})}
        budget = self.method.budget
        return Stats(
            model=lm.source.spec, family=lm.adapter.family, quantization=lm.quant, device=lm.device,
            dtype=lm.dtype, random_weights=lm.source.random_weights, video=self.video_stats,
            compression={"method": self.method.name, "params": self.params,
                         "budget": None if budget is None else budget.value, "counters": counters},
            video_reused=video_reused, load_s=lm.take_load_time(),
            prompt_tokens=len(prompt_ids), prefix_reused_tokens=reused, prefill_tokens=len(prompt_ids) - reused,
            prefill_saved_s=saved, generated_tokens=len(ids), kv_entries_full=len(prompt_ids) + steps,
            kv_entries_full_mean=sum(full) / len(full) if full else 0.0,
            kv_entries_attended_mean=sum(attended) / len(attended) if attended else 0.0,
            visual_tokens_kept=None if deeper is None else deeper[1],
            visual_tokens_kept_from_layer=0 if deeper is None else deeper[0],
            prefill_s=prefill_s, decode_s=end - start - prefill_s,
            first_decode_step_s=(streamer.second_token_at or end) - (streamer.first_token_at or end) if steps else 0.0,
            total_s=total, memory=peak_memory(lm.device),
        )
