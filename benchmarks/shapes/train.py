"""Train the tiny LLaVA-OneVision behind `--model builtin:shapes` on procedurally generated clips.

The checkpoint is the real `LlavaOnevisionForConditionalGeneration` (SigLIP tower, projector, 2x2
pooling, one image_newline, Qwen2 decoder) with tiny widths, so every part of the serving path
(from_pretrained, the adapter's preprocessing, compression hooks, generate, scoring) runs as for a
Hub checkpoint. Clips come from `dycoke_cli.shapes`, the same code that makes evaluation sets.

Why the script looks the way it does (measured on a 2-core CPU; see the log it writes):
- Data is made once: a pool of clips, round-tripped through real libx264 (16 clips tiled into one
  448 x 448 video, which amortises the coder's start-up), kept as decoded uint8 frames. Each use
  draws one of 16 exact symmetries (flips, transpose, time reversal) with relabelled answers.
- One packed sequence per clip: [prompt prefix + video] once, then the four questions, each
  attending to the video and itself only (a block 4-D mask, positions restarting after the video):
  identical logits to four separate prompts at a third of the cost.
- Content-blind augmentation only, so the model tolerates shortened inputs without ever seeing a
  compression method's choice: frames picked as `--frames F` picks them (F = 4..8), then random
  token drops at rates 0.25 / 0.5 / 0.75 / 0.9, once per clip or drawn per frame (then some frames
  stay whole among frames cut hard), the kept tokens scattered or one rectangle of cells per frame
  (a model that only saw scattered drops misread the time of frames whose few kept tokens sit
  together, as they do wherever something moved). Order is kept and kept tokens get contiguous
  positions, as the engine gives them. For half the clips, the answer tokens after the first (the
  ones decoding produces) lose a random 70% or all of the video in the last decoder layer, so no
  answer leans there on a video token a decode-time pruner may take away.
- Loss on answer tokens and the end token only. A clip whose drop leaves no token of the flash's
  frame asks no flash question and no description (its answer could only be guessed). Auxiliary
  heads (discarded, never saved) speed up learning: on the pooled video tokens (square / flash in
  the cell, square colour, the cell's place, the square's centre) and on the decoder states at
  every video token, in the order the answer needs them: after layer 1, whether the token opens a
  frame as far as its cell shows; after layer 2, how many such openings so far (the token's frame,
  found by counting, wherever the cells show every opening); after layer 3, the time of its frame,
  the direction, whether a token of the flash's frame has come yet and in which quarter. Without
  the counting targets the model read a token's time from its share of the sequence, which
  DyCoke's whole anchor frames make wrong (see README.md here).

Command (the one that produced dycoke_cli/builtin/shapes; the time it took is in README.md here and
in the log's last line; two threads, so a busy machine slows it down badly):

    OMP_NUM_THREADS=2 python benchmarks/shapes/train.py --out runs/shapes
    python benchmarks/shapes/train.py --install runs/shapes/checkpoint   # copy, pin the digests
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dycoke_cli import shapes  # noqa: E402
from dycoke_cli.batch.choices import prompt as choice_prompt  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
GRID = 4  # pooled tokens per side: 112 px / patch 14 = 8 patches, pooled 2 x 2
TOKENS = GRID * GRID
# The description's tokens share this weight (a letter answer's tokens weigh 1 each): sharing the
# weight of one letter, the description's colour word was never learnt in one run.
DESCRIBE_WEIGHT = 4.0
CELL_PX = shapes.SIZE // GRID  # 28 px of the frame per pooled token


@dataclass
class Settings:
    seed: int = 1234
    pool: int = 2400  # distinct clips (x16 symmetries)
    steps: int = 2400
    batch: int = 16  # clips per step (4 questions each)
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    ramp: float = 0.15  # share of steps over which augmentation ramps from 0 to full
    drop_rates: tuple = (0.25, 0.5, 0.75, 0.9)
    per_frame: float = 0.6  # share of dropped clips whose rate is drawn per frame
    whole: float = 0.3  # there, the share of frames kept whole
    blocks: float = 0.5  # share of dropped clips whose kept tokens form one rectangle of cells per frame
    late_drop: float = 0.5  # share of clips whose answer tokens see part of the video in the last layer
    late_rates: tuple = (0.7, 1.0)  # the share of video tokens those answer tokens lose there
    frame_change: float = 0.3  # share of clips shown with 4..7 frames
    aux: float = 1.0
    vision_width: int = 64
    vision_layers: int = 2
    text_width: int = 128
    text_layers: int = 4
    heads: int = 4
    rope_theta: float = 10000.0
    threads: int = 2
    eval_clips: int = 128


# ----------------------------------------------------------------------------- tokenizer and model

def questions() -> list[tuple[str, str, list[str] | None]]:
    """(task, prompt text exactly as `dycoke run` renders it, options)."""
    out = []
    for task in shapes.TASKS:
        question, options = shapes.QUESTIONS[task]
        out.append((task, choice_prompt(question, options) if options else question, options))
    return out


def build_tokenizer():
    """A small byte-level BPE split at newlines only and trained on the prompt's lines and the answers'
    words: a multiple-choice prompt is ~15 tokens instead of ~48 (sequences are mostly video), while
    every other text still tokenizes, byte by byte at worst."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = [line for _, text, _ in questions() for line in text.split("\n")]
    words = [" " + w for c in shapes.COLOR_NAMES for w in (c,)] + [" " + d + "." for d in shapes.DIRECTIONS]
    words += [" " + w for w in "square moves The flash is in the quarter.".split()] + [" " + q for q in shapes.QUARTERS]
    corpus = lines * 4 + words * 8 + ["user", "assistant", "system"] * 4 + list(shapes.LETTERS)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<image>", "<video>"])


def build_model(s: Settings, tokenizer):
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=s.vision_width,
                           intermediate_size=4 * s.vision_width, num_hidden_layers=s.vision_layers,
                           num_attention_heads=2, image_size=shapes.SIZE, patch_size=14, vision_use_head=False),
        text_config=dict(model_type="qwen2", hidden_size=s.text_width, intermediate_size=3 * s.text_width,
                         num_hidden_layers=s.text_layers, num_attention_heads=s.heads, num_key_value_heads=s.heads,
                         max_position_embeddings=4096, rope_theta=s.rope_theta, vocab_size=len(tokenizer),
                         tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], tie_word_embeddings=True,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )
    torch.manual_seed(s.seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def preprocessor_settings() -> dict:
    """What the adapter reads (models/base.read_preprocessor): bicubic, /255, mean = std = 0.5."""
    side = shapes.SIZE
    return {"size": {"height": side, "width": side}, "resample": 3, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
            "do_convert_rgb": True}


def pixels_of(frames: np.ndarray):
    """(B, F, H, W, 3) uint8 -> (B, F, 3, H, W) float32 exactly as the adapter preprocesses a clip."""
    from dycoke_cli.models.base import resize_normalize

    b, f = frames.shape[:2]
    flat = resize_normalize(frames.reshape(b * f, *frames.shape[2:]), (shapes.SIZE, shapes.SIZE),
                            [0.5] * 3, [0.5] * 3, 1 / 255)
    return flat.view(b, f, *flat.shape[1:])


@dataclass
class Prompts:
    prefix: list[int]  # tokens before the video (the same for every question)
    suffix: dict  # task -> tokens after the video, up to the assistant's turn
    answers: dict  # (task, answer text) -> answer tokens + end token
    video: int
    eos: int
    pad: int


def prompts_of(tokenizer, template: str) -> Prompts:
    """Split each question's prompt, rendered as the adapter renders it, around its video token."""
    from dycoke_cli.models.base import conversation

    video = tokenizer.convert_tokens_to_ids("<video>")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prefix, suffix = None, {}
    for task, text, _ in questions():
        rendered = tokenizer.apply_chat_template(conversation([(text, None)], None, {"type": "video"}),
                                                 chat_template=template, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(rendered, add_special_tokens=False).input_ids
        at = ids.index(video)
        assert prefix in (None, ids[:at]), "the video must come first in every prompt"
        prefix, suffix[task] = ids[:at], ids[at + 1:]
    answers = {}
    for task in shapes.TASKS:
        texts = list(shapes.LETTERS) if task != "describe" else [
            shapes.describe(c, d, q) for c in shapes.COLOR_NAMES for d in shapes.DIRECTIONS for q in shapes.QUARTERS]
        for text in texts:
            answers[(task, text)] = tokenizer(text, add_special_tokens=False).input_ids + [eos]
    return Prompts(prefix, suffix, answers, video, eos, tokenizer.convert_tokens_to_ids("<|endoftext|>"))


# ----------------------------------------------------------------------------- data

def cell_fractions(labels: shapes.Labels) -> tuple[np.ndarray, np.ndarray]:
    """(F, 4, 4) share of each pooled cell covered by the square, and by the flash."""
    def cover(x, y, side):
        out = np.zeros((GRID, GRID))
        for i in range(GRID):  # rows
            for j in range(GRID):  # columns
                dx = max(0, min(x + side, (j + 1) * CELL_PX) - max(x, j * CELL_PX))
                dy = max(0, min(y + side, (i + 1) * CELL_PX) - max(y, i * CELL_PX))
                out[i, j] = dx * dy / CELL_PX ** 2
        return out

    square = np.stack([cover(x, y, shapes.SQUARE) for x, y in labels.square_xy])
    flash = np.zeros_like(square)
    flash[labels.flash_frame] = cover(*labels.flash_xy, shapes.FLASH)
    return square, flash


def roundtrip(clips: np.ndarray) -> np.ndarray:
    """(16, F, S, S, 3) clips -> the same after one H.264 yuv420p crf 18 round trip, tiled 4 x 4."""
    n, f, side = clips.shape[0], clips.shape[1], clips.shape[2]
    tiled = clips.reshape(4, 4, f, side, side, 3).transpose(2, 0, 3, 1, 4, 5).reshape(f, 4 * side, 4 * side, 3)
    buffer = io.BytesIO()
    shapes.encode(tiled, buffer)
    buffer.seek(0)
    back = shapes.decode(buffer)
    return back.reshape(f, 4, side, 4, side, 3).transpose(1, 3, 0, 2, 4, 5).reshape(n, f, side, side, 3)


@dataclass
class Pool:
    frames: np.ndarray  # (N, F, S, S, 3) uint8, decoded after H.264
    color: np.ndarray  # (N,)
    direction: np.ndarray  # (N,)
    flash: np.ndarray  # (N,) flash frame
    square: np.ndarray  # (N, F, 4, 4) cell coverage
    lamp: np.ndarray  # (N, F, 4, 4) flash coverage
    centre: np.ndarray  # (N, F, 2) square centre (row, column) / frame side


def make_pool(seed: int, count: int) -> Pool:
    count = -(-count // 16) * 16
    made = [shapes.clip(shapes.clip_rng(seed, i)) for i in range(count)]
    frames = np.concatenate([roundtrip(np.stack([m[0] for m in made[i:i + 16]])) for i in range(0, count, 16)])
    labels = [m[1] for m in made]
    cells = [cell_fractions(label) for label in labels]
    centre = np.array([[((y + shapes.SQUARE / 2) / shapes.SIZE, (x + shapes.SQUARE / 2) / shapes.SIZE)
                        for x, y in label.square_xy] for label in labels])
    return Pool(frames, np.array([x.color for x in labels]), np.array([x.direction for x in labels]),
                np.array([x.flash_frame for x in labels]), np.stack([c[0] for c in cells]),
                np.stack([c[1] for c in cells]), centre)


# left, right, up, down under a horizontal flip, a vertical flip, a transpose, a time reversal
_FLIP_X, _FLIP_Y, _TRANSPOSE, _REVERSE = [1, 0, 2, 3], [0, 1, 3, 2], [2, 3, 0, 1], [1, 0, 3, 2]


def symmetric(pool: Pool, index: int, sym: int):
    """Clip `index` under symmetry `sym` (4 bits: flip x, flip y, transpose, reverse time), relabelled."""
    frames, square, lamp, centre = pool.frames[index], pool.square[index], pool.lamp[index], pool.centre[index]
    direction, flash = int(pool.direction[index]), int(pool.flash[index])
    if sym & 1:
        frames, square, lamp, direction = frames[:, :, ::-1], square[:, :, ::-1], lamp[:, :, ::-1], _FLIP_X[direction]
        centre = np.stack([centre[:, 0], 1 - centre[:, 1]], -1)
    if sym & 2:
        frames, square, lamp, direction = frames[:, ::-1], square[:, ::-1], lamp[:, ::-1], _FLIP_Y[direction]
        centre = np.stack([1 - centre[:, 0], centre[:, 1]], -1)
    if sym & 4:
        frames, square, lamp = frames.transpose(0, 2, 1, 3), square.transpose(0, 2, 1), lamp.transpose(0, 2, 1)
        direction, centre = _TRANSPOSE[direction], centre[:, ::-1]
    if sym & 8:
        frames, square, lamp, direction = frames[::-1], square[::-1], lamp[::-1], _REVERSE[direction]
        flash, centre = shapes.FRAMES - 1 - flash, centre[::-1]
    return (np.ascontiguousarray(frames), square, lamp, int(pool.color[index]), direction, flash,
            np.ascontiguousarray(centre))


def picked_frames(count: int, total: int = shapes.FRAMES) -> list[int]:
    """The frames `--frames count` picks from a clip of `total` (video/reader.py: interval midpoints)."""
    return sorted({min(total - 1, int((i + 0.5) * total / count)) for i in range(count)})


@dataclass
class Item:
    frames: list[int]  # picked frames, ascending
    keep: np.ndarray  # (len(frames) * 16,) bool over the picked frames' tokens
    tasks: list[str]
    answers: dict  # task -> answer text
    color: int
    direction: int
    flash: int
    square: np.ndarray  # (F, 4, 4)
    lamp: np.ndarray
    centre: np.ndarray  # (F, 2) square centre (row, column) / frame side
    late: np.ndarray | None = None  # (kept video tokens,) bool: what decoded answer tokens see in the last layer


def rectangle(rng, rate: float, corner: tuple[int, int] | None) -> np.ndarray:
    """(16,) bool: one frame keeping a rectangle of about (1 - rate) * 16 cells, at `corner` (as far as
    it fits) or anywhere. Whole for rate 0."""
    if rate == 0:
        return np.ones(TOKENS, bool)
    area = max(1, round((1 - rate) * TOKENS))
    height = int(rng.integers(-(-area // GRID), GRID + 1))
    width = min(GRID, max(1, round(area / height)))
    top, left = corner if corner is not None else (int(rng.integers(GRID)), int(rng.integers(GRID)))
    top, left = min(top, GRID - height), min(left, GRID - width)
    cells = np.zeros((GRID, GRID), bool)
    cells[top:top + height, left:left + width] = True
    return cells.reshape(-1)


def kept_tokens(rng, frames: int, s: Settings) -> np.ndarray:
    """(frames * 16,) bool: a content-blind drop. The rate is one per clip or drawn per frame, where
    `s.whole` of the frames stay whole among frames cut hard; the kept tokens are scattered at random
    or, in `s.blocks` of clips, one rectangle of cells per frame, half the time at the same corner in
    every frame (a tube). Both layouts matter: a model trained on even, scattered drops misread the
    time of frames whose few kept tokens sit together next to whole frames, as DyCoke leaves them."""
    if rng.random() < s.per_frame:
        rates = np.where(rng.random(frames) < s.whole, 0.0, rng.choice(s.drop_rates, size=frames))
    else:
        rates = np.full(frames, rng.choice(s.drop_rates))
    if rng.random() < s.blocks:
        corner = (int(rng.integers(GRID)), int(rng.integers(GRID))) if rng.random() < 0.5 else None
        keep = np.concatenate([rectangle(rng, rate, corner) for rate in rates])
    else:
        keep = rng.random(frames * TOKENS) >= np.repeat(rates, TOKENS)
    if not keep.any():
        keep[rng.integers(len(keep))] = True
    return keep


def kept_frames(frames: list[int], keep: np.ndarray) -> np.ndarray:
    """(kept tokens,) the frame of each kept token."""
    return np.repeat(np.array(frames), TOKENS)[keep]


def flash_frame_kept(flash: int, frames: list[int], keep: np.ndarray) -> np.ndarray:
    """(kept tokens,) bool: the kept tokens of the flash's frame.

    The vision tower attends across a whole frame, so every token of the flash's frame carries the
    flash, its cells or not (a model trained on scattered drops answered every flash question at
    50% drops). A clip whose drop leaves nothing of that frame asks no flash question: its answer
    could only be guessed."""
    return kept_frames(frames, keep) == flash


def draw_item(rng, clip, s: Settings, augment: float) -> Item:
    _, square, lamp, color, direction, flash, _ = clip
    frames = list(range(shapes.FRAMES))
    if rng.random() < augment * s.frame_change:
        frames = picked_frames(int(rng.integers(4, shapes.FRAMES)))
    keep = np.ones(len(frames) * TOKENS, bool)
    if rng.random() < augment * 0.8:
        keep = kept_tokens(rng, len(frames), s)
    late = None
    if rng.random() < augment * s.late_drop:
        late = rng.random(int(keep.sum())) >= rng.choice(s.late_rates)
    flash_kept = flash_frame_kept(flash, frames, keep).any()
    tasks = ["color", "direction"] + (["flash", "describe"] if flash_kept else [])
    quarter = flash * 4 // shapes.FRAMES
    answers = {"color": shapes.LETTERS[color], "direction": shapes.LETTERS[direction],
               "flash": shapes.LETTERS[quarter],
               "describe": shapes.describe(shapes.COLOR_NAMES[color], shapes.DIRECTIONS[direction],
                                           shapes.QUARTERS[quarter])}
    return Item(frames, keep, tasks, answers, color, direction, flash, square, lamp, clip[6], late)


# ----------------------------------------------------------------------------- the packed forward

def packed_batch(items: list[Item], p: Prompts):
    """Token ids, positions, a (B, 1, L, L) bool mask, video slots and answer targets of a batch."""
    import torch

    rows = []
    for it in items:
        n_video = int(it.keep.sum()) + 1  # + image_newline
        ids = p.prefix + [p.video] * n_video
        pos = list(range(len(ids)))
        segments, targets = [], []  # (start, end) of each question block; (index, token, weight, task)
        base = len(ids)
        for task in it.tasks:
            q = p.suffix[task]
            a = p.answers[(task, it.answers[task])]
            start = len(ids)
            ids += q + a[:-1]
            pos += list(range(base, base + len(q) + len(a) - 1))
            segments.append((start, len(ids)))
            weight = DESCRIBE_WEIGHT / len(a) if task == "describe" else 1.0
            for k, token in enumerate(a):
                targets.append((start + len(q) - 1 + k, token, weight, task))
        rows.append((ids, pos, segments, targets, len(p.prefix), n_video))
    length = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), length), p.pad)
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    mask = torch.zeros((len(rows), 1, length, length), dtype=torch.bool)
    for b, (row_ids, row_pos, segments, _, _, _) in enumerate(rows):
        n = len(row_ids)
        ids[b, :n], pos[b, :n] = torch.tensor(row_ids), torch.tensor(row_pos)
        video_end = segments[0][0]
        mask[b, 0, :n, :video_end] = torch.tril(torch.ones(n, video_end, dtype=torch.bool))
        for start, end in segments:
            mask[b, 0, start:end, start:end] = torch.tril(torch.ones(end - start, end - start, dtype=torch.bool))
        mask[b, 0, torch.arange(n, length), torch.arange(n, length)] = True  # padding sees itself: no NaN
    return ids, pos, mask, rows


def late_mask(mask, items: list[Item], rows):
    """The (B, 1, L, L) mask for the last decoder layer: an answer's tokens after its first (the ones
    decoding produces) lose the video tokens an item's `late` drops; the newline stays. Content-blind,
    so the last layer learns not to lean on any one video token, whichever a decode-time pruner keeps."""
    last = mask.clone()
    for b, (it, row) in enumerate(zip(items, rows)):
        if it.late is None:
            continue
        targets = row[3]
        decoded = [t[0] for i, t in enumerate(targets) if i > 0 and targets[i - 1][3] == t[3]]
        lost = row[4] + np.flatnonzero(~it.late)
        if not decoded or not len(lost):
            continue
        last[b, 0, np.array(decoded)[:, None], lost[None, :]] = False
    return last


def forward(model, items: list[Item], feats, p: Prompts):
    """Logits at the answer targets and the decoder states (embeddings, then after each layer).

    feats: (B, F*16 + 1, D) pooled video tokens of the batch's clips (all 8 frames, then the newline).
    """
    import torch

    ids, pos, mask, rows = packed_batch(items, p)
    embeds = model.get_input_embeddings()(ids)  # (B, L, D)
    embeds = embeds.clone()
    for b, (it, row) in enumerate(zip(items, rows)):
        per_frame = feats[b, :-1].view(shapes.FRAMES, TOKENS, -1)[it.frames].reshape(-1, feats.shape[-1])
        video = torch.cat([per_frame[torch.from_numpy(it.keep)], feats[b, -1:]])  # (N + 1, D)
        embeds[b, row[4]:row[4] + row[5]] = video
    hook = None
    if any(it.late is not None for it in items):
        last = late_mask(mask, items, rows)  # (B, 1, L, L), the last decoder layer's view
        hook = model.model.language_model.layers[-1].register_forward_pre_hook(
            lambda module, args, kwargs: (args, {**kwargs, "attention_mask": last}), with_kwargs=True)
    try:
        out = model.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                                         output_hidden_states=True)
    finally:
        if hook is not None:
            hook.remove()
    where = [(b, t[0]) for b, row in enumerate(rows) for t in row[3]]
    bi = torch.tensor([w[0] for w in where])
    ti = torch.tensor([w[1] for w in where])
    logits = model.lm_head(out.last_hidden_state[bi, ti])  # (targets, V)
    return logits, out.hidden_states, rows


def lm_loss(logits, rows):
    import torch
    import torch.nn.functional as F

    tokens = torch.tensor([t[1] for row in rows for t in row[3]])
    weights = torch.tensor([t[2] for row in rows for t in row[3]])
    losses = F.cross_entropy(logits, tokens, reduction="none")
    return (losses * weights).sum() / weights.sum()


AUX_VISION = 2 + 4 + 2 + 2  # square / flash in the cell (logits), colour (4), cell row / column, square centre
# Decoder targets at each video token, by the number of layers below the state they read: a frame
# boundary the cells show (1), how many of those so far (2), then time, direction and flash (3).
OPENS, COUNT, TIME = 1, 2, 3
AUX_LM = {OPENS: 1, COUNT: shapes.FRAMES, TIME: 1 + 4 + 5}


def _cell_grid():
    import torch

    rows = torch.arange(GRID).repeat_interleave(GRID)
    return torch.stack([rows, torch.arange(GRID).repeat(GRID)], -1).float() / (GRID - 1)  # (16, 2)


def frame_openings(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """Per kept video token: does it open a frame as far as its cell shows (its cell is not after the
    previous kept token's, so a new frame must have begun), and how many such openings so far (0-based).

    Kept tokens stay in raster order within a frame, so these are exact functions of the input the
    decoder sees, unlike the true frame, which a drop of a whole frame's opening cells can hide."""
    cell = np.tile(np.arange(TOKENS), len(item.frames))[item.keep]  # (N,)
    opens = np.ones(len(cell), bool)
    opens[1:] = cell[1:] <= cell[:-1]
    return opens, np.cumsum(opens) - 1


def flash_seen(item: Item) -> np.ndarray:
    """(kept tokens + 1,) per kept video token, then the newline: 0 until the first kept token of the
    flash's frame, its quarter + 1 from there on. Like the openings, a function of what the decoder sees."""
    shown = np.append(flash_frame_kept(item.flash, item.frames, item.keep), False)
    return np.where(np.cumsum(shown) > 0, item.flash * 4 // shapes.FRAMES + 1, 0)


def aux_losses(vision_head, lm_heads, feats, hidden, items: list[Item], rows) -> dict:
    """Auxiliary per-token losses (training only): see the module docstring. The cell's own row and
    column, and where in the frame the square is, make each token carry its place in the frame, the
    one thing direction needs that colour does not. Counting frame openings gives each token its
    frame wherever the cells show every opening, under any drop pattern; the share of the sequence
    before it gives the frame only under even drops."""
    import torch
    import torch.nn.functional as F

    frames = shapes.FRAMES
    v = vision_head(feats[:, :-1])  # (B, F*16, 10) on the pooled tokens of every frame
    square = torch.tensor(np.stack([it.square.reshape(-1) for it in items]), dtype=torch.float32)
    lamp = torch.tensor(np.stack([it.lamp.reshape(-1) for it in items]), dtype=torch.float32)
    on = square > 0.15  # (B, F*16)
    losses = {"cells": F.binary_cross_entropy_with_logits(v[..., 0], on.float())
              + F.binary_cross_entropy_with_logits(v[..., 1], (lamp > 0.15).float())}
    colour = torch.tensor([it.color for it in items]).repeat_interleave(v.shape[1])
    losses["colour"] = F.cross_entropy(v[..., 2:6].reshape(-1, 4)[on.view(-1)], colour[on.view(-1)])
    grid = _cell_grid().repeat(frames, 1)  # (F*16, 2)
    losses["place"] = 4 * F.mse_loss(v[..., 6:8], grid.expand(len(items), -1, -1))
    centre = torch.tensor(np.stack([np.repeat(it.centre, TOKENS, axis=0) for it in items]), dtype=torch.float32)
    losses["square_at"] = 4 * F.mse_loss(v[..., 8:10][on], centre[on])
    # on the decoder states at every kept video token (and, after 3 layers, the newline)
    states = {layers: [] for layers in AUX_LM}
    opens, counts, times, dirs, seen = [], [], [], [], []
    for b, (it, row) in enumerate(zip(items, rows)):
        n = int(it.keep.sum())
        for layers in AUX_LM:
            states[layers].append(hidden[layers][b, row[4]:row[4] + n + (layers == TIME)])
        flags, so_far = frame_openings(it)
        opens.append(flags)
        counts.append(so_far)
        frame = kept_frames(it.frames, it.keep)
        has_square = np.concatenate([it.square[f].reshape(-1) > 0.15 for f in it.frames])[it.keep]
        times.append(np.append(frame / (frames - 1), 1.0))
        dirs.append(np.append(np.where(has_square & (frame > it.frames[0]), it.direction, -100), it.direction))
        seen.append(flash_seen(it))
    h1 = lm_heads[str(OPENS)](torch.cat(states[OPENS]))[:, 0]  # (tokens,)
    losses["opens"] = F.binary_cross_entropy_with_logits(h1, torch.tensor(np.concatenate(opens), dtype=torch.float32))
    h2 = lm_heads[str(COUNT)](torch.cat(states[COUNT]))  # (tokens, 8)
    losses["count"] = 2 * F.cross_entropy(h2, torch.tensor(np.concatenate(counts)))
    h = lm_heads[str(TIME)](torch.cat(states[TIME]))  # (tokens + 1, 10)
    losses["time"] = 4 * F.mse_loss(h[:, 0], torch.tensor(np.concatenate(times), dtype=torch.float32))
    losses["direction"] = F.cross_entropy(h[:, 1:5], torch.tensor(np.concatenate(dirs)), ignore_index=-100)
    losses["flash"] = F.cross_entropy(h[:, 5:], torch.tensor(np.concatenate(seen)), ignore_index=-100)
    return losses


# ----------------------------------------------------------------------------- evaluation in-process

def evaluate(model, p: Prompts, pool: Pool, s: Settings, modes: list[str]) -> dict:
    """Accuracy per task of the first answer token (and the whole description) on held-out clips, under
    no drop, random drops and, for information only, DyCoke's TTM choice (never trained on)."""
    import torch

    from dycoke_cli.compress.ttm import ttm_keep_indices

    rng = np.random.default_rng(7)
    result = {}
    model.eval()
    with torch.no_grad():
        for mode in modes:
            right = {t: 0 for t in shapes.TASKS}
            for start in range(0, len(pool.color), 32):
                idx = list(range(start, min(start + 32, len(pool.color))))
                clips = [symmetric(pool, i, 0) for i in idx]
                feats = video_features(model, np.stack([c[0] for c in clips]))
                items = []
                for b, c in enumerate(clips):
                    it = draw_item(rng, c, s, 0.0)
                    it.tasks = list(shapes.TASKS)
                    if mode.startswith("random"):
                        it.keep = rng.random(len(it.keep)) >= float(mode[6:])
                    elif mode.startswith("ttm"):
                        tokens = feats[b, :-1].view(shapes.FRAMES, TOKENS, -1)
                        kept = ttm_keep_indices(tokens, float(mode[3:])).numpy()
                        it.keep = np.zeros(len(it.keep), bool)
                        it.keep[kept] = True
                    items.append(it)
                logits, _, rows = forward(model, items, feats, p)
                guess = logits.argmax(-1)
                k = 0
                for row in rows:
                    good = {}
                    for t in row[3]:
                        good.setdefault(t[3], True)
                        good[t[3]] &= bool(guess[k] == t[1])
                        k += 1
                    for task, ok in good.items():
                        right[task] += ok
            result[mode] = {t: round(right[t] / len(pool.color), 4) for t in shapes.TASKS}
    model.train()
    return result


def video_features(model, frames: np.ndarray):
    """(B, F, S, S, 3) uint8 -> (B, F*16 + 1, D) pooled video tokens, newline last."""
    out = model.model.get_video_features(pixel_values_videos=pixels_of(frames), return_dict=True)
    pooled = out.pooler_output
    return pooled if isinstance(pooled, __import__("torch").Tensor) else __import__("torch").stack(list(pooled))


# ----------------------------------------------------------------------------- saving and checking

def save_checkpoint(model, tokenizer, template: str, s: Settings, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(template)
    (folder / "video_preprocessor_config.json").write_text(json.dumps(preprocessor_settings(), indent=2))
    (folder / "shapes_training.json").write_text(json.dumps(asdict(s), indent=2))


def check_pipeline(folder: Path, model, p: Prompts, pool: Pool) -> float:
    """Load the saved folder through the package and compare its logits with the training forward."""
    import torch

    from dycoke_cli.engine import Session  # noqa: F401 - the import alone checks the package is whole
    from dycoke_cli.models.loading import load_model
    from dycoke_cli.video.frames import Frames

    lm = load_model(str(folder), device="cpu", dtype="float32", quant="none", offline=True)
    clip = symmetric(pool, 0, 0)
    frames = Frames(pixels=clip[0], timestamps=[i / shapes.FPS for i in range(shapes.FRAMES)],
                    indices=list(range(shapes.FRAMES)), fps=shapes.FPS, duration=shapes.FRAMES / shapes.FPS)
    adapter = lm.adapter
    features = adapter.encode(adapter.preprocess(frames))
    block = adapter.video_block(features)
    text = questions()[0][1]
    prompt = adapter.prompt([(text, None)], block, features)
    ids = torch.tensor([prompt.ids])
    inputs = adapter.generate_inputs(features.tokens.reshape(-1, features.tokens.shape[-1]), None, features, None)
    with torch.no_grad():
        served = lm.model(input_ids=ids, **inputs).logits[0, -1]
        item = Item(list(range(shapes.FRAMES)), np.ones(shapes.FRAMES * TOKENS, bool), ["color"],
                    {"color": "A"}, 0, 0, 0, clip[1], clip[2], clip[6])
        feats = video_features(model, clip[0][None])
        logits, _, _ = forward(model, [item], feats, p)
    return float((served - logits[0]).abs().max())


# ----------------------------------------------------------------------------- main

def lr_at(step: int, s: Settings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for checkpoint/ and train.log")
    parser.add_argument("--install", type=Path, help="copy this trained checkpoint into the package and stop")
    for name, value in asdict(Settings()).items():
        if not isinstance(value, tuple):
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    if args.install:
        return install(args.install)
    if args.out is None:
        parser.error("--out is required")
    s = Settings(**{k: getattr(args, k) for k in asdict(Settings()) if hasattr(args, k)})
    train(s, args.out)
    return 0


def train(s: Settings, out: Path) -> None:
    import os

    import torch

    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "train.log").open("w")
    t0 = time.perf_counter()

    def log(**fields):
        fields = {"t": round(time.perf_counter() - t0, 1), **fields, "load": round(os.getloadavg()[0], 2)}
        line = json.dumps(fields)
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(event="start", settings=asdict(s), torch=torch.__version__)
    from dycoke_cli.models.random_specs.llava_onevision import CHAT_TEMPLATE

    tokenizer = build_tokenizer()
    model = build_model(s, tokenizer)
    p = prompts_of(tokenizer, CHAT_TEMPLATE)
    log(event="model", params=sum(x.numel() for x in model.parameters()), vocab=len(tokenizer),
        prompt_tokens={t: len(p.prefix) + len(q) for t, q in p.suffix.items()},
        answer_tokens={t: len(p.answers[(t, "A" if t != "describe" else shapes.describe("red", "left", "first quarter"))])
                       for t in shapes.TASKS})
    pool = make_pool(s.seed, s.pool)
    held = make_pool(s.seed + 1, s.eval_clips)  # a different seed: never trained on
    log(event="data", clips=len(pool.color), held_out=len(held.color), mbytes=round(pool.frames.nbytes / 2**20))

    width = model.config.text_config.hidden_size
    vision_head = torch.nn.Linear(width, AUX_VISION)
    lm_heads = torch.nn.ModuleDict({str(layers): torch.nn.Linear(width, n) for layers, n in AUX_LM.items()})
    params = list(model.parameters()) + list(vision_head.parameters()) + list(lm_heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    rng = np.random.default_rng(s.seed)
    model.train()
    sums = {"loss": 0.0, "aux": 0.0, "n": 0}
    for step in range(s.steps):
        augment = min(1.0, step / max(1, s.ramp * s.steps))
        chosen = rng.integers(len(pool.color), size=s.batch)
        clips = [symmetric(pool, int(i), int(rng.integers(16))) for i in chosen]
        items = [draw_item(rng, c, s, augment) for c in clips]
        feats = video_features(model, np.stack([c[0] for c in clips]))  # (B, 129, D)
        logits, hidden, rows = forward(model, items, feats, p)
        loss = lm_loss(logits, rows)
        parts = aux_losses(vision_head, lm_heads, feats, hidden, items, rows) if s.aux > 0 else {}
        aux = sum(parts.values()) if parts else torch.zeros(())
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value.item()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, s)
        optimizer.zero_grad(set_to_none=True)
        (loss + s.aux * aux).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        sums["loss"] += loss.item()
        sums["aux"] += aux.item()
        sums["n"] += 1
        if (step + 1) % 25 == 0:
            log(step=step + 1, lr=round(lr_at(step, s), 6), augment=round(augment, 2),
                **{k: round(v / sums["n"], 4) for k, v in sums.items() if k != "n"})
            sums = {"loss": 0.0, "aux": 0.0, "n": 0}
        if (step + 1) % 400 == 0 or step + 1 == s.steps:
            log(step=step + 1, eval=evaluate(model, p, held, s, ["full", "random0.5", "ttm0.7"]))
    folder = out / "checkpoint"
    save_checkpoint(model, tokenizer, CHAT_TEMPLATE, s, folder)
    diff = check_pipeline(folder, model, p, held)
    size = sum(f.stat().st_size for f in folder.iterdir())
    log(event="saved", folder=str(folder), bytes=size, pipeline_max_abs_logit_diff=diff,
        wall_s=round(time.perf_counter() - t0, 1))


# Files an installed checkpoint needs; shapes_training.json records how it was made.
SHIPPED = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
           "chat_template.jinja", "video_preprocessor_config.json", "shapes_training.json")


def install(checkpoint: Path) -> int:
    """Copy the checkpoint into dycoke_cli/builtin/shapes and pin its files' SHA-256 digests in
    dycoke_cli/models/builtin.py (checked at every load)."""
    import re

    target = REPO / "dycoke_cli" / "builtin" / "shapes"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    lines = []
    for name in SHIPPED:
        shutil.copyfile(checkpoint / name, target / name)
        lines.append(f'        "{name}": "{hashlib.sha256((target / name).read_bytes()).hexdigest()}",\n')
    code = REPO / "dycoke_cli" / "models" / "builtin.py"
    begin, end = "        # digests of shapes: begin\n", "        # digests of shapes: end\n"
    text = code.read_text()
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: begin + "".join(lines) + end, text,
                  flags=re.S)
    code.write_text(text)
    print(f"installed {checkpoint} -> {target}; digests pinned in {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
