"""The interface every model family implements, so the engine never branches on a model's type.

A family adapter knows what the engine must not: how frames become pixel tensors (from the
checkpoint's own processor settings, in torch, without torchvision), how the vision tower's output
splits into per-frame tokens, where the chat template and the family's video markup put those
tokens in the prompt (frames may be separated by text), which position ids they get, and how
precomputed tokens are handed to `generate`.

An adapter is built in two steps: from the configuration and tokenizer alone (cheap: enough to count
a video's tokens and build prompts, so bad settings are refused before any weights load), then
`attach(model)` once the weights are loaded.

Positions after pruning (what each family does, see `positions`):
- 1-D RoPE families (LLaVA-OneVision, SmolVLM2): kept tokens get contiguous positions 0..S'-1, as
  in DyCoke's released code; the model never sees a gap.
- M-RoPE families (Qwen): position ids are computed on the UNPRUNED prompt and gathered for what is
  kept, so every kept token keeps its time/height/width ids and the text after the video keeps its
  own; rope indices are never recomputed on a pruned prompt.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch

from dycoke_cli.compress.base import VisualLayout
from dycoke_cli.errors import ModelError


@dataclass
class VideoFeatures:
    """A video's visual tokens before compression, as the language model would consume them.

    tokens: (F, T, D) per frame in raster order; for Qwen a frame is a temporal group of `group`
            input frames. extras: per-token features that must be pruned in step with `tokens`
            (Qwen3-VL's deepstack levels), name -> (F, T, D'). trailing: (K, D) tokens after the last
            frame that are never pruned (LLaVA-OneVision's image_newline), or None.
    present: (F*T,) bool, the cells a selection inside the tower kept (the others' rows are zeros and
            never reach the language model), or None: every cell. patches_kept: the patches of each frame
            that ran through the tower's layers after that selection (for the FLOP count).
    """

    tokens: torch.Tensor
    grid: tuple[int, int]  # (h, w), h * w == T
    times: tuple[float, ...]  # seconds of each frame's first input frame
    group: int = 1
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    trailing: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)  # what the family's prompt needs (timestamp labels, duration)
    present: torch.Tensor | None = None
    patches_kept: tuple[int, ...] = ()

    def layout(self) -> VisualLayout:
        return VisualLayout(frames=self.tokens.shape[0], grid=self.grid, times=self.times, group=self.group)

    @staticmethod
    def join(parts: list["VideoFeatures"], meta: dict) -> "VideoFeatures":
        """The features of consecutive chunks of one video as one (frames in order; the trailing tokens,
        which do not depend on the frames, once)."""
        first = parts[0]
        if len(parts) == 1:
            return replace(first, meta=meta)
        return VideoFeatures(
            tokens=torch.cat([p.tokens for p in parts]), grid=first.grid,
            times=tuple(t for p in parts for t in p.times), group=first.group,
            extras={name: torch.cat([p.extras[name] for p in parts]) for name in first.extras},
            trailing=first.trailing, meta=meta,
            present=None if first.present is None else torch.cat([p.present for p in parts]),
            patches_kept=tuple(n for p in parts for n in p.patches_kept))


@dataclass(frozen=True)
class Clip:
    """The whole sampled clip while it is encoded chunk by chunk: what a chunk's preprocessing and the
    family's prompt need to know about all of it (Qwen sizes frames by the clip's frame count and
    labels groups by time; SmolVLM2 writes the duration)."""

    timestamps: tuple[float, ...]  # every frame that is encoded, in order
    duration: float  # seconds, of the video

    @property
    def frames(self) -> int:
        return len(self.timestamps)


@dataclass
class Pixels:
    """A family's pixel inputs for one video: `values` as the vision tower takes them, `times` the
    seconds of each frame (temporal group), `extra` whatever else the tower needs (Qwen's grid_thw)."""

    values: torch.Tensor
    times: tuple[float, ...]
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class VideoBlock:
    """The video's stretch of the prompt, nothing pruned: placeholders plus any text between frames.

    ids: its token ids. slots: (F, T) index into `ids` of every visual token, raster order per frame;
    placeholders not in `slots` (a trailing newline) are never pruned.
    """

    ids: list[int]
    slots: torch.Tensor


@dataclass(frozen=True)
class Prompt:
    """A whole prompt with the video block in place, nothing pruned.

    positions: (R, S) the family's position ids of this unpruned prompt (R = 3 rows for M-RoPE), or
    None where the language model's default 1-D positions apply (they are then contiguous after
    pruning). video_start: index of the block's first token.
    """

    ids: list[int]
    video_start: int
    block: VideoBlock
    positions: torch.Tensor | None = None

    @property
    def slots(self) -> torch.Tensor:
        """(F, T) absolute prompt positions of the visual tokens."""
        return self.block.slots + self.video_start

    @property
    def video_end(self) -> int:
        return self.video_start + len(self.block.ids)

    def prune(self, keep: torch.Tensor) -> "PrunedPrompt":
        """Drop every visual token not in `keep` ((N,) flat indices into F*T); text is never dropped.

        The j-th visual placeholder left (in prompt order) receives kept row j, i.e. token keep[j],
        and takes that token's own position ids: selections keep frames in temporal order, so each
        frame's rows land in that frame's run, and within a frame a reordered selection (TTM's
        reference variant) keeps its tokens' true positions.
        """
        slots = self.slots.flatten()  # (F*T,) prompt positions, raster order per frame
        kept = torch.ones(len(self.ids), dtype=torch.bool)
        kept[slots] = False
        kept[slots[keep.cpu()]] = True
        order = kept.nonzero().squeeze(1)  # (S',) kept prompt positions, ascending
        is_visual = torch.zeros(len(self.ids), dtype=torch.bool)
        is_visual[slots] = True
        visual = is_visual[order].nonzero().squeeze(1)  # (N,) where kept rows go in the pruned prompt
        positions = None
        if self.positions is not None:
            source = order.clone()
            source[visual] = slots[keep.cpu()]  # each placeholder takes its row's own position ids
            positions = self.positions[:, source]  # (R, S')
        return PrunedPrompt(ids=[self.ids[i] for i in order.tolist()], visual=visual, positions=positions,
                            video_end=int((order < self.video_end).sum()))


@dataclass(frozen=True)
class PrunedPrompt:
    """What is prefilled: the prompt with the dropped visual tokens removed.

    visual: (N,) positions in `ids` of the kept visual tokens, ascending; row i of the kept tokens
    goes to visual[i]. positions: (R, S') gathered position ids, or None (contiguous).
    """

    ids: list[int]
    visual: torch.Tensor
    positions: torch.Tensor | None
    video_end: int  # end of the (pruned) video block: a cached prefix must cover it to be reused


class FamilyAdapter(ABC):
    family: ClassVar[str]  # shown to users, e.g. "LLaVA-OneVision"
    model_types: ClassVar[tuple[str, ...]]  # config.json model_type values this adapter serves
    # Modules kept in 16 bits under bitsandbytes: full prefixes (a bare name matches nothing).
    quant_skip_modules: ClassVar[list[str]]
    group: ClassVar[int] = 1  # input frames merged into one token grid (Qwen: temporal patch 2)
    min_prune_layer: ClassVar[int] = 0  # first decoder layer whose sequence may shrink (FastV)
    default_frames: ClassVar[int] = 32  # --frames when neither --frames nor --fps is given

    def __init__(self, config, tokenizer, folder: Path, random_weights: bool):
        self.config = config
        self.tokenizer = tokenizer
        self.folder = folder
        self.random_weights = random_weights
        self.chat_template = find_chat_template(folder, tokenizer)
        if self.chat_template is None:
            raise ModelError(f"checkpoint in '{folder}' has no chat template; it cannot be prompted")
        self.model = None

    def attach(self, model) -> None:
        self.model = model

    @staticmethod
    @abstractmethod
    def model_class():
        """The transformers class to load this family with."""

    # ------------------------------------------------------------------ config-only

    @property
    def text_config(self):
        return self.config.get_text_config()

    @abstractmethod
    def token_grid(self, height: int, width: int, frames: int) -> tuple[int, int]:
        """(h, w) visual tokens of one frame (one temporal group) of a clip of `frames` height x width
        frames (Qwen budgets pixels over the whole clip, so more frames can mean smaller ones)."""

    def frame_tokens(self, height: int, width: int, frames: int) -> int:
        h, w = self.token_grid(height, width, frames)
        return h * w

    def video_layout(self, times: list[float], size: tuple[int, int]) -> VisualLayout:
        """The layout the features of these frames (`size` = (width, height)) will have, known before
        decoding: what a method is planned against."""
        width, height = size
        padded = list(times) + [times[-1]] * (-len(times) % self.group)  # an odd count repeats the last
        return VisualLayout(frames=len(padded) // self.group, grid=self.token_grid(height, width, len(times)),
                            times=tuple(padded[::self.group]), group=self.group, inputs=len(times))

    trailing_tokens: ClassVar[int] = 0
    video_part: ClassVar[dict] = {"type": "video"}  # the video's entry in a chat template message

    @classmethod
    def describe_sampling(cls) -> str:
        """The family's default sampling in words, for `dycoke models` and the README."""
        return f"{cls.default_frames} frames, uniform"

    def default_sampling(self):
        """The family's own sampling when the user gives neither --frames nor --fps."""
        from dycoke_cli.video import Sampling

        return Sampling(frames=self.default_frames)

    def text_tokens(self, turns: list[tuple[str, str | None]], system: str | None = None) -> int:
        """Tokens of a conversation's prompt around the video (its markup counted, not its tokens)."""
        return len(self.render(conversation(turns, system, self.video_part)))

    # ------------------------------------------------------------------ frames -> features

    @abstractmethod
    def preprocess(self, frames, clip: Clip) -> Pixels:
        """video.Frames (one chunk of `clip`) -> the family's pixel inputs on the model's device and dtype.
        A chunk holds a whole number of temporal groups, except perhaps the last."""

    @abstractmethod
    def encode(self, pixels: Pixels) -> VideoFeatures:
        """Run the vision tower and projector on one chunk's pixels (meta left empty)."""

    def video_meta(self, clip: Clip) -> dict:
        """Facts about the whole clip the prompt or the rope index needs (VideoFeatures.meta)."""
        return {}

    # ------------------------------------------------------------------ inside the tower (models/tower.py)

    def encoder_refusal(self) -> str | None:
        """Why this checkpoint cannot take a selection inside its vision tower (None: it can)."""
        return f"{self.family} has no selection inside its vision tower"

    tower_attention_supported: ClassVar[bool] = False  # tower_attention is implemented

    def tower_dims(self) -> tuple[int, int]:
        """(hidden width, MLP width) of the vision tower's layers, for its FLOP count."""
        vision = self.config.vision_config
        return vision.hidden_size, vision.intermediate_size

    def tower_patches(self, tokens_per_frame: int) -> int:
        """Patches the tower runs for one frame that gives `tokens_per_frame` tokens."""
        raise NotImplementedError

    def tower_depth(self) -> int:
        """Tower layers whose output the features are made of (a selection may sit at 0..depth)."""
        raise NotImplementedError

    def tower_attention(self, state) -> torch.Tensor:
        """(f, C, K) the attention each cell's patches receive in tower layer `state.layer`, averaged over
        heads and queries (for methods that read it)."""
        raise NotImplementedError

    def encode_to(self, pixels: Pixels, layer: int):
        """tower.TowerState: one chunk's hidden states entering tower layer `layer`, every patch."""
        raise NotImplementedError

    def tower_cells(self, state) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
        """((f, C, K, D) each cell's K patches at that layer, (C, K) pooling weights or None, the (h, w)
        grid of the C cells)."""
        raise NotImplementedError

    def encode_from(self, state, keep: torch.Tensor) -> VideoFeatures:
        """The rest of the tower on the kept cells' patches only; keep: (f, C) bool. The features hold
        the kept cells' tokens (zeros elsewhere, `present` saying which)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ prompt

    @abstractmethod
    def video_block(self, features: VideoFeatures) -> VideoBlock:
        """The video's placeholders (and the text between frames) for these features."""

    @abstractmethod
    def prompt(self, turns: list[tuple[str, str | None]], block: VideoBlock, features: VideoFeatures,
               system: str | None = None) -> Prompt:
        """Render a conversation (question, answer-or-None per turn; the video in the first turn)."""

    # ------------------------------------------------------------------ generate

    @abstractmethod
    def generate_inputs(self, tokens: torch.Tensor, extras: dict[str, torch.Tensor], features: VideoFeatures,
                        prompt: PrunedPrompt) -> dict:
        """Keyword arguments that hand the kept tokens (N, D) (plus kept extras and the trailing tokens
        of `features`) to `generate` for a full prefill of `prompt`."""

    def continue_inputs(self, prompt: PrunedPrompt, reused: int) -> dict:
        """Keyword arguments for a prefill that starts after `reused` cached tokens (no video inside)."""
        return {}

    @abstractmethod
    def text_layers(self) -> list:
        """The language model's decoder layers (each with `self_attn`)."""

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text. Random-weight models draw ids from a vocabulary larger than their small
        tokenizer, so their ids are folded into it: the text is meaningless either way."""
        if self.random_weights:
            ids = [i % len(self.tokenizer) for i in ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def render(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation through the checkpoint's chat template, generation prompt added."""
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(text, add_special_tokens=False).input_ids


def conversation(turns: list[tuple[str, str | None]], system: str | None, video_part: dict) -> list[dict]:
    """Chat messages: an optional system turn, then user/assistant turns with the video first in the
    first user turn (media before text, so [prefix + video] is shared by every question)."""
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    for i, (question, answer) in enumerate(turns):
        content = [{"type": "text", "text": question}]
        if i == 0:
            content.insert(0, video_part)
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def find_chat_template(folder: Path, tokenizer) -> str | None:
    """The checkpoint's multimodal chat template: the processor's file if present, else the tokenizer's."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            template = json.loads(path.read_text()).get("chat_template")
            if template:
                return template
    return tokenizer.chat_template


def read_preprocessor(folder: Path) -> dict:
    """Video preprocessing settings, preferring the video processor's file over the image one's."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def resize_normalize(frames, size: tuple[int, int], mean, std, scale: float, mode: str = "bicubic"):
    """(F, H, W, 3) uint8 numpy -> (F, 3, h, w) float32: resize the uint8 tensor (that, not resizing a
    float one, is what matches transformers' processors), rescale, normalise."""
    import torch.nn.functional as F

    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (F, 3, H, W) uint8
    if tuple(pixels.shape[-2:]) != tuple(size):
        pixels = F.interpolate(pixels, size=size, mode=mode, antialias=True)
    pixels = pixels.float() * scale
    mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std  # (F, 3, h, w)


def splice_video_text(tokenizer, text: str, placeholder: str, block_text: str, token: int,
                      shape: tuple[int, int]) -> tuple[list[int], int, VideoBlock]:
    """Put a video's text (placeholders and the text between frames) in place of `placeholder` in a
    rendered prompt and tokenize the whole, as transformers' processors do (text running into the
    template's own, e.g. SmolVLM2's "User: You are provided...", tokenizes differently alone).

    Returns (ids, video_start, block): the block is every token that overlaps the video's text, its
    slots the (F, T) = `shape` positions of `token` inside it.
    """
    if text.count(placeholder) != 1:
        raise ModelError(f"the chat template did not place exactly one '{placeholder}' in the prompt")
    at = text.index(placeholder)
    full = text[:at] + block_text + text[at + len(placeholder):]
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded.input_ids, encoded.offset_mapping
    end_char = at + len(block_text)
    inside = [i for i, (a, b) in enumerate(offsets) if a < end_char and b > at]  # tokens overlapping the video
    start, end = inside[0], inside[-1] + 1
    slots = [i - start for i in range(start, end) if ids[i] == token]
    if len(slots) != shape[0] * shape[1] or ids.count(token) != len(slots):
        raise ModelError(f"the prompt holds {ids.count(token)} visual placeholders where the video has "
                         f"{shape[0] * shape[1]}: its text must not contain the placeholder token")
    return ids, start, VideoBlock(ids=ids[start:end], slots=torch.tensor(slots).view(*shape))
