"""What Qwen2.5-VL and Qwen3-VL share: frames in temporal groups, the patch layout, M-RoPE positions.

Both towers see a video as temporal groups of `temporal_patch_size` (2) frames cut into patch x patch
squares; a 2x2 merger turns each group into (h/2)(w/2) tokens, raster order. To the compression
methods a "frame" is one such group. The language model places tokens with 3-D M-RoPE ids (time,
row, column) that transformers' `get_rope_index` computes from the whole prompt; those ids are
computed once on the UNPRUNED prompt and gathered for what is kept (Prompt.prune), so every kept
token keeps its own ids and the text after the video keeps its original ones. Rope indices are
never recomputed on a pruned prompt: they would re-pack the survivors into a smaller grid.

What differs between the two (the subclass's business): how a frame's size is chosen (Qwen2.5-VL: a
per-frame pixel budget; Qwen3-VL: a budget over the whole clip), the prompt text of a video
(Qwen3-VL writes a timestamp before each group), what the rope index needs besides the grid
(Qwen2.5-VL: seconds per group) and the extra per-token features (Qwen3-VL: deepstack levels).

Preprocessing follows transformers' torchvision video processors (Qwen2VLVideoProcessor,
Qwen3VLVideoProcessor): resize the uint8 frames (torch's antialiased interpolate is what torchvision
runs on the CPU), rescale, normalise, pad an odd frame count with the last frame, patchify.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

from dycoke_cli.errors import ModelError
from dycoke_cli.models.base import (FamilyAdapter, Pixels, Prompt, PrunedPrompt, VideoBlock, VideoFeatures,
                                    conversation, read_preprocessor, resize_normalize, splice_video_text)
from dycoke_cli.models.tower import TowerState

RESAMPLE = {1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL resample codes -> torch modes
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class QwenAdapter(FamilyAdapter):
    quant_skip_modules = ["model.visual", "lm_head"]  # the vision tower holds its merger(s)
    group = 2
    video_pad = "<|video_pad|>"
    default_fps = 2.0  # qwen-vl-utils' FPS, unless the checkpoint's settings say otherwise
    default_max_frames = 768

    def __init__(self, config, tokenizer, folder, random_weights):
        super().__init__(config, tokenizer, folder, random_weights)
        vision = config.vision_config
        self.patch = vision.patch_size
        self.merge = vision.spatial_merge_size
        self.group = vision.temporal_patch_size
        self.settings = settings = read_preprocessor(folder)
        self.resample = RESAMPLE.get(settings.get("resample", 3), "bicubic")
        self.scale = settings.get("rescale_factor", 1 / 255) if settings.get("do_rescale", True) else 1.0
        normalize = settings.get("do_normalize", True)
        self.mean = settings.get("image_mean", self.default_mean) if normalize else [0.0] * 3
        self.std = settings.get("image_std", self.default_std) if normalize else [1.0] * 3
        size = settings.get("size") or {}
        self.min_pixels = settings.get("min_pixels") or size.get("shortest_edge") or self.default_min_pixels
        self.max_pixels = settings.get("max_pixels") or size.get("longest_edge") or self.default_max_pixels
        # The reference implementation's (qwen-vl-utils) bound on a video's total pixels; transformers
        # announced it as its default and leaves it off only for backward compatibility.
        self.cap_pixels = settings.get("cap_pixels_per_frame", True) is not False
        self.video_token = config.video_token_id

    # ------------------------------------------------------------------ family specifics

    default_mean = CLIP_MEAN
    default_std = CLIP_STD
    default_min_pixels = 128 * 28 * 28
    default_max_pixels = 768 * 28 * 28

    @abstractmethod
    def resized(self, frames: int, height: int, width: int) -> tuple[int, int]:
        """(h, w) every frame of a clip of `frames` height x width frames is resized to."""

    @abstractmethod
    def video_text(self, features: VideoFeatures) -> str:
        """The prompt text of the video's tokens (what the processor puts for its placeholder)."""

    def placeholder(self, text: str) -> str:
        """The stretch of the rendered template the video text replaces."""
        return self.video_pad

    def rope_inputs(self, features: VideoFeatures) -> dict:
        """Keyword arguments get_rope_index needs besides ids, token types and the grid."""
        return {}

    def encoder_output(self, tokens: torch.Tensor, extras: dict[str, torch.Tensor]):
        """The mm_encoder_outputs["video"] object forward reads: tokens (N, D) plus kept extras."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=(tokens,))

    def extra_features(self, output, frames: int, per_frame: int) -> dict[str, torch.Tensor]:
        """Per-token features besides the tokens, each (F, T, D'), from get_video_features' output."""
        return {}

    # ------------------------------------------------------------------ config-only

    def token_grid(self, height: int, width: int, frames: int) -> tuple[int, int]:
        h, w = self.resized(frames, height, width)
        factor = self.patch * self.merge
        return h // factor, w // factor

    @classmethod
    def describe_sampling(cls) -> str:
        return f"{cls.default_fps:g} fps, at most {cls.default_max_frames} frames (or the checkpoint's fps/max_frames)"

    def default_sampling(self):
        """Qwen samples by time: the checkpoint's fps (2) up to its max_frames (768)."""
        from dycoke_cli.video import Sampling

        return Sampling(fps=float(self.settings.get("fps") or self.default_fps),
                        max_frames=int(self.settings.get("max_frames") or self.default_max_frames))

    # ------------------------------------------------------------------ frames -> features

    def preprocess(self, frames, clip) -> Pixels:
        """One chunk of the clip; every frame is sized for the whole clip (its frame count sets Qwen's
        pixel budget), and only an odd last chunk is padded with its last frame, as the processor pads
        the clip."""
        count, height, width = frames.pixels.shape[:3]
        size = self.resized(clip.frames, height, width)
        video = resize_normalize(frames.pixels, size, self.mean, self.std, self.scale, self.resample)  # (F, 3, h, w)
        values, grid = patchify(video, self.patch, self.merge, self.group)  # (G*gh*gw, 3*t*p*p)
        return Pixels(values=values.to(self.model.device, self.model.dtype),
                      times=tuple(group_times(frames.timestamps, self.group)[0]),
                      extra={"video_grid_thw": torch.tensor([grid])})

    @torch.no_grad()
    def encode(self, pixels: Pixels) -> VideoFeatures:
        grid = pixels.extra["video_grid_thw"]  # (1, 3): groups, patch rows, patch columns
        out = self.model.model.get_video_features(pixel_values_videos=pixels.values,
                                                  video_grid_thw=grid.to(self.model.device), return_dict=True)
        groups, rows, cols = grid[0].tolist()
        h, w = rows // self.merge, cols // self.merge
        tokens = out.pooler_output[0].view(groups, h * w, -1)  # (F, T, D): groups in time, raster order
        return VideoFeatures(tokens=tokens, grid=(h, w), times=pixels.times, group=self.group,
                             extras=self.extra_features(out, groups, h * w))

    # ------------------------------------------------------------------ prompt

    def video_block(self, features: VideoFeatures) -> VideoBlock:
        """The video's tokens tokenized on their own (prompt() tokenizes them in place, as the processor does)."""
        _, _, block = splice_video_text(self.tokenizer, self.video_pad, self.video_pad, self.video_text(features),
                                        self.video_token, tuple(features.tokens.shape[:2]))
        return block

    def prompt(self, turns, block: VideoBlock, features: VideoFeatures, system: str | None = None) -> Prompt:
        """The template rendered with the video's text in place and tokenized as a whole (the processor's
        way), plus the M-RoPE ids of that unpruned prompt."""
        messages = conversation(turns, system, self.video_part)
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template,
                                                  add_generation_prompt=True, tokenize=False)
        ids, start, block = splice_video_text(self.tokenizer, text, self.placeholder(text), self.video_text(features),
                                              self.video_token, tuple(features.tokens.shape[:2]))
        return Prompt(ids=ids, video_start=start, block=block, positions=self.rope_positions(ids, features))

    def rope_positions(self, ids: list[int], features: VideoFeatures) -> torch.Tensor:
        """(3, S) M-RoPE ids (time, row, column) of the unpruned prompt, as generate computes them."""
        if self.model is None:
            raise ModelError("positions need the loaded model (attach it first)")
        input_ids = torch.tensor([ids])
        types = (input_ids == self.video_token).int() * 2  # 2 marks video tokens
        frames, _ = features.tokens.shape[:2]
        h, w = features.grid
        grid = torch.tensor([[frames, h * self.merge, w * self.merge]])  # in patches, as the processor reports
        positions, _ = self.model.model.get_rope_index(input_ids, mm_token_type_ids=types, video_grid_thw=grid,
                                                       **self.rope_inputs(features))
        return positions[:, 0]  # (3, S)

    # ------------------------------------------------------------------ generate

    def generate_inputs(self, tokens, extras, features: VideoFeatures, prompt: PrunedPrompt) -> dict:
        return {"mm_encoder_outputs": {"video": self.encoder_output(tokens, extras)},
                "position_ids": self.position_ids(prompt)}

    def continue_inputs(self, prompt: PrunedPrompt, reused: int) -> dict:
        # generate keeps the last (S' - reused) columns: the suffix keeps its original positions.
        return {"position_ids": self.position_ids(prompt)}

    def position_ids(self, prompt: PrunedPrompt) -> torch.Tensor:
        """(4, 1, S'): row 0 the plain text positions (the mask and the cache length count with them,
        so they stay contiguous), rows 1-3 the gathered M-RoPE ids. Decoding continues at last + 1 on
        every row, which is where the unpruned prompt's decoding continues too (its last token is text)."""
        rope = prompt.positions  # (3, S')
        text = torch.arange(rope.shape[1]).view(1, -1)
        return torch.cat([text, rope]).unsqueeze(1).to(self.model.device)

    def text_layers(self) -> list:
        return list(self.model.model.language_model.layers)

    # ------------------------------------------------------------------ inside the tower

    def encoder_refusal(self) -> str | None:
        return None

    def tower_depth(self) -> int:
        return self.config.vision_config.depth

    def tower_patches(self, tokens_per_frame: int) -> int:
        return tokens_per_frame * self.merge * self.merge

    def tower_inputs(self, visual, values: torch.Tensor, grid: torch.Tensor) -> TowerInputs:
        """The family's tower up to its first block (patch embedding, position embeddings, order)."""
        raise NotImplementedError

    def full_attention_layers(self) -> set[int]:
        """Blocks that attend over a whole frame; the others attend within windows."""
        return set(range(self.tower_depth()))

    def deepstack_layers(self) -> list[int]:
        """Blocks after which a deepstack level is tapped, in level order."""
        return []

    @torch.no_grad()
    def encode_to(self, pixels: Pixels, layer: int) -> TowerState:
        visual = self.model.model.visual
        grid = pixels.extra["video_grid_thw"].to(visual.device)  # (1, 3): groups, patch rows, patch columns
        run = self.tower_inputs(visual, pixels.values.type(visual.dtype), grid)
        taps = {}
        for n in range(layer):
            run.hidden = self._block(visual, n, run)
            if n in self.deepstack_layers():
                taps[n] = visual.deepstack_merger_list[self.deepstack_layers().index(n)](run.hidden)  # (G, D')
        groups = int(grid[0, 0])
        return TowerState(hidden=run.hidden, layer=layer, frames=groups, times=pixels.times,
                          extra={"run": run, "taps": taps, "grid": grid})

    def tower_cells(self, state: TowerState):
        run, grid = state.extra["run"], state.extra["grid"]
        rows, cols = int(grid[0, 1]) // self.merge, int(grid[0, 2]) // self.merge
        cells = run.hidden.view(len(run.order), self.merge * self.merge, -1)  # (G, 4, D) in tower order
        raster = cells[run.order.argsort()]  # (G, 4, D): cell g of the raster order, its 2x2 patches
        return raster.view(state.frames, rows * cols, *raster.shape[1:]), None, (rows, cols)

    @torch.no_grad()
    def encode_from(self, state: TowerState, keep: torch.Tensor) -> VideoFeatures:
        """Later blocks on the kept merge groups only: a full-attention block attends within a frame's
        kept groups, a window block within the kept groups of the same window of the unpruned grid (the
        windows the model was trained with; forming new ones over the survivors would put distant patches
        together), every patch keeps its rotary position; then the merger, and deepstack taps (those
        below the selection cut to the kept groups, those above computed on them)."""
        visual, run = self.model.model.visual, state.extra["run"]
        unit = self.merge * self.merge
        kept = keep.flatten().to(run.order.device)[run.order].nonzero().flatten()  # kept tower positions
        run = run.narrowed(kept, unit)
        taps = {n: tap[kept] for n, tap in state.extra["taps"].items()}
        for n in range(state.layer, self.tower_depth()):
            run.hidden = self._block(visual, n, run)
            if n in self.deepstack_layers():
                taps[n] = visual.deepstack_merger_list[self.deepstack_layers().index(n)](run.hidden)
        where = run.order  # raster index of each kept group, in tower order

        def grid_of(rows: torch.Tensor) -> torch.Tensor:  # (Gk, D') in tower order -> (f, C, D'), zeros dropped
            out = rows.new_zeros(keep.numel(), rows.shape[-1])
            out[where] = rows
            return out.view(*keep.shape, -1)

        tokens = grid_of(visual.merger(run.hidden))
        extras = {f"deepstack.{i}": grid_of(taps[n]) for i, n in enumerate(self.deepstack_layers())}
        rows, cols = int(state.extra["grid"][0, 1]) // self.merge, int(state.extra["grid"][0, 2]) // self.merge
        unit = self.merge * self.merge
        return VideoFeatures(tokens=tokens, grid=(rows, cols), times=state.times, group=self.group, extras=extras,
                             present=keep.flatten(), patches_kept=tuple(int(n) * unit for n in keep.sum(1)))

    def _block(self, visual, n: int, run: "TowerInputs") -> torch.Tensor:
        """Block n on the run's patches, attending within frames or (window blocks) within windows."""
        segments = run.frames if n in self.full_attention_layers() or run.windows is None else run.windows
        lengths = torch.unique_consecutive(segments, return_counts=True)[1] * self.merge * self.merge
        cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return visual.blocks[n](run.hidden, cu_seqlens=cu_seqlens, max_seqlen=int(lengths.max()),
                                position_embeddings=run.rotary)


@dataclass
class TowerInputs:
    """A Qwen tower's patches in the order its blocks run them (merge groups of 4 consecutive rows).

    hidden: (G*4, D); rotary: (cos, sin), each (G*4, d); order: (G,) the raster index of the merge group
    at each tower position; frames / windows: (G,) the frame (temporal group) and the attention window
    (None: no windows) of each tower position, in runs.
    """

    hidden: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor]
    order: torch.Tensor
    frames: torch.Tensor
    windows: torch.Tensor | None = None

    def narrowed(self, kept: torch.Tensor, unit: int) -> "TowerInputs":
        """Only the merge groups at tower positions `kept` (ascending), each with its own `unit` patches."""
        def rows(x: torch.Tensor) -> torch.Tensor:
            return x.view(-1, unit, x.shape[-1])[kept].flatten(0, 1)

        return TowerInputs(hidden=rows(self.hidden), rotary=tuple(rows(r) for r in self.rotary), order=self.order[kept],
                           frames=self.frames[kept], windows=None if self.windows is None else self.windows[kept])


def patchify(video: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """(F, C, H, W) -> ((F'/t)*(H/p)*(W/p), C*t*p*p) rows and the [groups, H/p, W/p] grid, as the Qwen video
    processors lay them out: an odd frame count repeats the last frame; rows in (group, row/m, col/m,
    m, m) order so that each m*m consecutive rows form one merged token; each row is (C, t, p, p), the
    layout of the tower's Conv3d kernel."""
    if pad := -video.shape[0] % temporal:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    frames, channels, height, width = video.shape
    groups, rows, cols = frames // temporal, height // patch, width // patch
    x = video.view(groups, temporal, channels, rows // merge, merge, patch, cols // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (G, r/m, c/m, m, m, C, t, p, p)
    return x.reshape(groups * rows * cols, channels * temporal * patch * patch), [groups, rows, cols]


def group_times(timestamps, group: int) -> tuple[list[float], list[list[float]]]:
    """(first time of each temporal group, every group's times), an odd count padded with the last
    frame as the processor pads the frames."""
    times = list(timestamps) + [timestamps[-1]] * (-len(timestamps) % group)
    groups = [times[i:i + group] for i in range(0, len(times), group)]
    return [g[0] for g in groups], groups


def check_aspect(height: float, width: float) -> None:
    """The processors' refusal of extreme shapes (their smart_resize raises the same way)."""
    if max(height, width) / min(height, width) > 200:
        raise ModelError(f"a {width}x{height} video is too elongated for Qwen (aspect ratio above 200)")


def seconds_between(times: list[float], duration: float) -> float:
    """Mean spacing of sampled frames in seconds (one frame: the clip's duration, at least a frame's worth)."""
    if len(times) > 1:
        return (times[-1] - times[0]) / (len(times) - 1)
    return duration if duration > 0 else 1.0
