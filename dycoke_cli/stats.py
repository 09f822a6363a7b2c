"""What one answer cost: stage timings, token counts and peak memory, as plain data.

Timers synchronise the device before reading the clock, so a GPU stage is charged for its own
kernels and not for the ones queued before it.
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


@contextmanager
def timed(device: str, sink: dict, key: str):
    """Add the wall time of the block, in seconds, to sink[key]."""
    synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        sink[key] = sink.get(key, 0.0) + time.perf_counter() - start


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def start_peak_window(device: str) -> bool:
    """Start a fresh peak-memory window; False where that is impossible (peak RSS on a non-Linux CPU).

    On CUDA the allocator's cache is emptied first, or the reserved peak would carry the last
    setting's blocks. On the CPU, freed heap is first handed back to the system (glibc's
    malloc_trim; otherwise the RSS, and so the new window's floor, would keep the last setting's
    high-water), then writing 5 to /proc/self/clear_refs (Linux >= 4.0) resets the RSS high-water
    mark, VmHWM, which peak_rss_bytes reads.
    """
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        reset_peak_memory(device)
        return True
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS floor stays where the last setting left it
        pass


def peak_memory(device: str) -> dict:
    """GPU max allocated/reserved since the last reset, or the process's peak RSS on the CPU."""
    if device.startswith("cuda"):
        import torch

        return {
            "peak_gpu_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved(device),
        }
    return {"peak_rss_bytes": peak_rss_bytes()}


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark. On Linux it is VmHWM, the high-water of the process's own
    memory since exec: getrusage's ru_maxrss also keeps what the parent held when it forked (a
    `dycoke` started by a large process would report the parent's size)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform == "darwin" else 1024)


# What getting one video ready cost: charged once, to the first answer about it.
VIDEO_STAGES = ("video_decode_s", "preprocess_s", "vision_encode_s", "compress_s", "cache_read_s", "cache_write_s")


@dataclass
class VideoStats:
    """Figures of encoding and compressing one video, shared by every question asked about it."""

    frames: int = 0  # frames the vision tower saw
    frame_timestamps: list[float] = field(default_factory=list)
    tokens_per_frame: int = 0  # per frame, or per temporal group of `frames_per_group` frames
    frames_per_group: int = 1
    visual_tokens_before: int = 0  # every visual token of the sampled frames, trailing newline excluded
    visual_tokens_after: int = 0  # what reaches the language model's prefill
    video_decode_s: float = 0.0
    preprocess_s: float = 0.0
    vision_encode_s: float = 0.0
    compress_s: float = 0.0  # the method's selection before prefill
    encoder_layer: int | None = None  # where a selection inside the vision tower acted
    tower_patches: int = 0  # patches a frame runs through the tower (every layer, or layers before encoder_layer)
    tower_patches_kept: list[int] = field(default_factory=list)  # per frame, through the layers from encoder_layer
    warnings: list[str] = field(default_factory=list)
    video_source: str = "encoded"  # "encoded" (decoded and run through the tower) or "cache" (read from disk)
    cache_read_s: float = 0.0  # the video cache: its key (the file's ends hashed) and, on a hit, reading the entry
    cache_write_s: float = 0.0  # the video cache: storing a new encoding
    cache_saved_s: float = 0.0  # on a hit: what decoding, preprocessing and the tower took when it was encoded

    @property
    def visual_tokens_kept_pct(self) -> float:
        return 100.0 * self.visual_tokens_after / max(1, self.visual_tokens_before)


@dataclass
class Stats:
    """Everything reported for one answer; `to_dict` gives the documented --json keys."""

    model: str
    family: str
    quantization: str
    device: str
    dtype: str
    random_weights: bool
    video: VideoStats
    compression: dict  # {"method", "params" (effective), "budget", "counters"}
    video_reused: bool = False  # the video was decoded, encoded and compressed for an earlier answer
    load_s: float = 0.0  # loading the model; charged to the first answer of the process only
    prompt_tokens: int = 0
    prefix_reused_tokens: int = 0  # prompt tokens whose KV came from an earlier question's cache
    prefill_tokens: int = 0  # prompt tokens actually run through the LM for this answer
    # Estimated prefill time the reused tokens would have cost, at the rate of this session's last
    # full prefill (reused tokens / full prompt tokens * full prefill time).
    prefill_saved_s: float = 0.0
    generated_tokens: int = 0
    finish_reason: str = "stop"  # "stop": the model ended its answer; "length": cut at max_new_tokens
    # Visual tokens the deepest layers see, and the first layer from which that holds: the prefill's
    # visual_tokens_after from layer 0 (None), unless a method drops more inside the language model (FastV).
    visual_tokens_kept: int | None = None
    visual_tokens_kept_from_layer: int = 0
    kv_entries_full: int = 0  # cache length at the last decode step
    kv_entries_full_mean: float = 0.0  # cache length, averaged over the decode steps
    kv_entries_attended_mean: float = 0.0  # entries the pruned layers attended to, averaged over the same steps
    prefill_s: float = 0.0  # from the prompt in hand to the first token: the language model's prefill
    decode_s: float = 0.0  # from the first token to the last
    first_decode_step_s: float = 0.0  # the first step after prefill: it carries one-off costs (allocations)
    total_s: float = 0.0
    memory: dict = field(default_factory=dict)

    @property
    def decode_steps(self) -> int:
        """Forward passes after prefill: the first token comes out of prefill."""
        return max(0, self.generated_tokens - 1)

    @property
    def decode_tokens_per_s(self) -> float:
        """Steady-state decode rate: tokens per second over the decode steps after the first, whose
        one-off costs would otherwise weigh on a short answer (with a single step, that step)."""
        steps, seconds = self.decode_steps, self.decode_s
        if steps > 1 and seconds > self.first_decode_step_s:
            steps, seconds = steps - 1, seconds - self.first_decode_step_s
        return steps / seconds if steps > 0 and seconds > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def time_to_first_token_s(self) -> float:
        """From frames in hand to the first token: preprocessing, vision encoder, selection, prefill
        (as papers and vLLM count it; video decoding and model loading excluded), plus the video
        cache's lookup and read or write, which stand between them. A follow-up that reuses the
        encoded video pays only its prefill."""
        v = self.video
        video = 0.0 if self.video_reused else (v.preprocess_s + v.vision_encode_s + v.compress_s + v.cache_read_s
                                               + v.cache_write_s)
        return video + self.prefill_s

    @property
    def video_source(self) -> str:
        """Where this answer's video came from: encoded, reused (in this session) or cache."""
        return "reused" if self.video_reused else self.video.video_source

    def to_dict(self) -> dict:
        v = self.video
        out = asdict(self)
        video = out.pop("video")
        video.pop("warnings")
        if self.video_reused:  # reported once, with the answer that paid for them
            video.update({key: 0.0 for key in VIDEO_STAGES + ("cache_saved_s",)})
        video["video_source"] = self.video_source
        memory = out.pop("memory")
        out.update(video)
        out.update(memory)
        kept = v.visual_tokens_after if self.visual_tokens_kept is None else self.visual_tokens_kept
        out["visual_tokens_kept"] = kept
        out["visual_tokens_kept_pct"] = round(100.0 * kept / max(1, v.visual_tokens_before), 2)
        out["decode_steps"] = self.decode_steps
        out["decode_tokens_per_s"] = self.decode_tokens_per_s
        out["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        out["time_to_first_token_s"] = self.time_to_first_token_s
        out["warnings"] = list(self.video.warnings)
        return out
