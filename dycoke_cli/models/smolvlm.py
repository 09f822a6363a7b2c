"""SmolVLM2 (`SmolVLMForConditionalGeneration`, model_type "smolvlm").

Video path: SmolVLM2 has no video tower; every sampled frame goes through the IMAGE path as one
square image, never split: resized (LANCZOS) so its longest edge is the video size, then squashed to
max_image_size x max_image_size (512: the aspect ratio is not kept), SigLIP (16 px patches, 32 x 32)
and a pixel shuffle by scale_factor (4) -> 64 tokens per frame, raster order over an 8 x 8 grid.

Prompt: the processor forces its DEFAULT_CHAT_TEMPLATE for conversations with a video and replaces
its `<video>` with an intro line ("You are provided the following series of sixty-four frames from
a 0:01:04 [H:MM:SS] video.") and, per frame, "\\nFrame from mm:ss:" + `<fake_token_around_image>
<global-img>` + 64 `<image>` + `<fake_token_around_image>`, then a blank line. That text between
frames is never pruned. Positions are 1-D: after pruning the kept tokens are contiguous, as for
LLaVA-OneVision. Frames sample at the checkpoint's video_sampling rate (1 fps, at most 64 frames).
"""

from __future__ import annotations

import functools
from datetime import timedelta

import torch

from dycoke_cli.errors import ModelError
from dycoke_cli.models.base import (FamilyAdapter, Pixels, Prompt, PrunedPrompt, VideoBlock, VideoFeatures,
                                    conversation, read_preprocessor, resize_normalize, splice_video_text)
from dycoke_cli.models.tower import TowerState, attention_received, cell_patches, ragged_layers

RESAMPLE = {1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL resample codes -> torch modes
MAX_IMAGE_SIZE = 4096  # transformers' cap on the first resize


class SmolVLMAdapter(FamilyAdapter):
    family = "SmolVLM2"
    model_types = ("smolvlm",)
    quant_skip_modules = ["model.vision_model", "model.connector", "lm_head"]
    video_placeholder = "<video>"

    def __init__(self, config, tokenizer, folder, random_weights):
        super().__init__(config, tokenizer, folder, random_weights)
        self.chat_template = default_chat_template()
        self.settings = settings = read_preprocessor(folder)
        self.sampling = settings.get("video_sampling") or {}
        # transformers' SmolVLMVideoProcessor: an explicit `size` next to `video_sampling` replaces its video_size.
        size = settings["size"] if "size" in settings and "video_sampling" in settings else \
            self.sampling.get("video_size") or {}
        vision = config.vision_config
        self.video_size = size.get("longest_edge", vision.image_size)
        self.side = (settings.get("max_image_size") or {}).get("longest_edge", vision.image_size)
        self.resample = RESAMPLE.get(settings.get("resample", 1), "lanczos")
        self.scale = settings.get("rescale_factor", 1 / 255) if settings.get("do_rescale", True) else 1.0
        normalize = settings.get("do_normalize", True)
        self.mean = settings.get("image_mean", [0.5] * 3) if normalize else [0.0] * 3
        self.std = settings.get("image_std", [0.5] * 3) if normalize else [1.0] * 3
        per_side = self.side // vision.patch_size // config.scale_factor
        self.grid = (per_side, per_side)
        self.image_token = config.image_token_id
        self.image_text = tokenizer.convert_ids_to_tokens(self.image_token)
        self.fake = getattr(tokenizer, "fake_image_token", None) or "<fake_token_around_image>"
        self.global_image = getattr(tokenizer, "global_image_token", None) or "<global-img>"

    @staticmethod
    def model_class():
        from transformers import SmolVLMForConditionalGeneration

        return SmolVLMForConditionalGeneration

    # ------------------------------------------------------------------ config-only

    def token_grid(self, height: int, width: int, frames: int) -> tuple[int, int]:
        return self.grid  # every frame becomes the same square

    @classmethod
    def describe_sampling(cls) -> str:
        return "1 fps, at most 64 frames (or the checkpoint's video_sampling)"

    def default_sampling(self):
        """The checkpoint's video_sampling: 1 fps, at most 64 frames."""
        from dycoke_cli.video import Sampling

        return Sampling(fps=float(self.sampling.get("fps", 1)), max_frames=int(self.sampling.get("max_frames", 64)))

    # ------------------------------------------------------------------ frames -> features

    def preprocess(self, frames, clip) -> Pixels:
        count, height, width = frames.pixels.shape[:3]
        mode = resize_mode(self.resample)
        pixels = torch.from_numpy(frames.pixels).permute(0, 3, 1, 2)  # (F, 3, H, W) uint8
        pixels = interpolate(pixels, longest_edge_size(height, width, self.video_size), mode)
        pixels = pixels.permute(0, 2, 3, 1).contiguous().numpy()  # (F, h, w, 3) uint8
        square = resize_normalize(pixels, (self.side, self.side), self.mean, self.std, self.scale, mode)  # (F, 3, S, S)
        values = square.unsqueeze(0).to(self.model.device, self.model.dtype)  # (1, F, 3, S, S)
        mask = torch.ones(1, count, self.side, self.side, dtype=torch.long, device=self.model.device)
        return Pixels(values=values, times=tuple(frames.timestamps), extra={"pixel_attention_mask": mask})

    def video_meta(self, clip) -> dict:
        return {"timestamps": clip.timestamps, "duration": clip.duration}

    @torch.no_grad()
    def encode(self, pixels: Pixels) -> VideoFeatures:
        frames = pixels.values.shape[1]
        out = self.model.model.get_image_features(pixels.values, pixels.extra["pixel_attention_mask"],
                                                  return_dict=True)
        pooled = out.pooler_output[0]  # (F*T, D): frames in order, raster order within each
        if pooled.shape[0] % frames:  # the tower skips frames whose pixels are all exactly 0.0
            raise ModelError("SmolVLM2 dropped a frame whose normalised pixels are all zero; disable none of "
                             "rescale/normalize in the checkpoint's preprocessor settings")
        tokens = pooled.view(frames, -1, pooled.shape[-1])  # (F, T, D)
        return VideoFeatures(tokens=tokens, grid=self.grid, times=pixels.times)

    # ------------------------------------------------------------------ prompt

    def video_text(self, features: VideoFeatures) -> str:
        """SmolVLMProcessor.replace_video_token's text for these frames."""
        frames, per_frame = features.tokens.shape[:2]
        times, duration = features.meta["timestamps"], features.meta["duration"]
        seconds = int(duration) if duration else int(times[-1])
        text = (f"You are provided the following series of {number_words(frames)} frames from a "
                f"{timedelta(seconds=seconds)} [H:MM:SS] video.\n")
        image = self.fake + self.global_image + self.image_text * per_frame + self.fake
        for t in times:
            text += f"\nFrame from {int(t // 60):02d}:{int(t % 60):02d}:" + image
        return text + "\n\n"

    def video_block(self, features: VideoFeatures) -> VideoBlock:
        """The video's text tokenized on its own (prompt() tokenizes it in place, as the processor does)."""
        _, _, block = splice_video_text(self.tokenizer, self.video_placeholder, self.video_placeholder,
                                        self.video_text(features), self.image_token, tuple(features.tokens.shape[:2]))
        return block

    def prompt(self, turns, block: VideoBlock, features: VideoFeatures, system: str | None = None) -> Prompt:
        messages = conversation(turns, system, self.video_part)
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template,
                                                  add_generation_prompt=True, tokenize=False)
        ids, start, block = splice_video_text(self.tokenizer, text, self.video_placeholder, self.video_text(features),
                                              self.image_token, tuple(features.tokens.shape[:2]))
        return Prompt(ids=ids, video_start=start, block=block)

    # ------------------------------------------------------------------ generate

    def generate_inputs(self, tokens, extras, features: VideoFeatures, prompt: PrunedPrompt) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=[tokens])}}

    def text_layers(self) -> list:
        return list(self.model.model.text_model.layers)

    # ------------------------------------------------------------------ inside the tower

    def encoder_refusal(self) -> str | None:
        return None

    def tower_depth(self) -> int:
        return self.config.vision_config.num_hidden_layers

    @torch.no_grad()
    def encode_to(self, pixels: Pixels, layer: int) -> TowerState:
        from transformers.masking_utils import create_bidirectional_mask

        tower = self.model.model.vision_model
        values = pixels.values[0]  # (f, 3, S, S): whole square frames, no padding
        patches = torch.ones(values.shape[0], self.side // tower.config.patch_size, self.side // tower.config.patch_size,
                             dtype=torch.bool, device=values.device)
        hidden = tower.embeddings(pixel_values=values, patch_attention_mask=patches)  # (f, P, D)
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=hidden, attention_mask=patches.flatten(1))
        for block in tower.encoder.layers[:layer]:
            hidden = block(hidden, mask)
        return TowerState(hidden=hidden, layer=layer, frames=values.shape[0], times=pixels.times)

    tower_attention_supported = True

    def tower_patches(self, tokens_per_frame: int) -> int:
        return (self.side // self.config.vision_config.patch_size) ** 2

    def tower_attention(self, state: TowerState) -> torch.Tensor:
        layer = self.model.model.vision_model.encoder.layers[state.layer]
        return attention_received(layer, state.hidden)[:, self._shuffle_groups()]  # (f, C, s*s)

    def tower_cells(self, state: TowerState):
        return state.hidden[:, self._shuffle_groups()], None, self.grid  # (f, C, s*s, D): concatenated by the shuffle

    @torch.no_grad()
    def encode_from(self, state: TowerState, keep: torch.Tensor) -> VideoFeatures:
        """Later SigLIP layers on each frame's kept shuffle groups, the post-layernorm, then the model's own
        pixel shuffle over the frame's grid and the modality projection of the kept cells only."""
        model, tower = self.model.model, self.model.model.vision_model
        groups = self._shuffle_groups()  # (C, s*s)
        patches = [cell_patches(groups, keep[i]) for i in range(state.frames)]
        layers = tower.encoder.layers[state.layer:]
        ran = tower.post_layernorm(torch.cat(ragged_layers(layers, [state.hidden[i, p] for i, p in enumerate(patches)],
                                                           tower.config)))
        grid = ran.new_zeros(state.hidden.shape)  # (f, P, D)
        for i, (p, rows) in enumerate(zip(patches, ran.split([len(p) for p in patches]))):
            grid[i, p] = rows
        shuffled = model.connector.pixel_shuffle(grid, model.connector.scale_factor)  # (f, C, s*s*D)
        projected = model.connector.modality_projection(shuffled[keep])  # (kept, D')
        tokens = projected.new_zeros(*keep.shape, projected.shape[-1])
        tokens[keep] = projected
        return VideoFeatures(tokens=tokens, grid=self.grid, times=state.times, present=keep.flatten(),
                             patches_kept=tuple(len(p) for p in patches))

    @functools.cache
    def _shuffle_groups(self) -> torch.Tensor:
        """(C, s*s) the patches each token's pixel shuffle concatenates, in its order: the model's own
        shuffle applied to the patch indices."""
        scale = self.config.scale_factor
        patches = (self.side // self.config.vision_config.patch_size) ** 2
        index = torch.arange(patches, dtype=torch.float64).view(1, patches, 1)
        return self.model.model.connector.pixel_shuffle(index, scale)[0].long()  # (C, s*s)


@functools.lru_cache(maxsize=None)
def resize_mode(mode: str) -> str:
    """The torch mode for a resample setting. torch's uint8 antialiased LANCZOS (what torchvision >= 0.27
    runs on the CPU) is recent; without it BICUBIC, as transformers itself falls back with an older
    torchvision."""
    if mode != "lanczos":
        return mode
    import torch.nn.functional as F

    try:
        F.interpolate(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), size=(2, 2), mode="lanczos", antialias=True)
        return "lanczos"
    except (NotImplementedError, RuntimeError, ValueError):
        return "bicubic"


def interpolate(pixels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(F, 3, H, W) uint8 resized as transformers' torchvision backend does on the CPU (no float round trip)."""
    import torch.nn.functional as F

    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    return F.interpolate(pixels, size=size, mode=mode, antialias=True)


def longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """SmolVLMVideoProcessor's first resize: the longest edge to `longest` (at most 4096), the other
    side int(...) keeping the aspect ratio, rounded up to even."""
    longest = min(MAX_IMAGE_SIZE, longest)
    if width >= height:
        height, width = int(longest / (width / height)), longest
        height += height % 2
    else:
        height, width = longest, int(longest * (width / height))
        width += width % 2
    return max(height, 1), max(width, 1)


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English cardinal as the processor writes it with `num2words` (which this tool does not need):
    'sixty-four', 'one hundred and one', 'one thousand, two hundred and five'."""
    try:
        from num2words import num2words

        return num2words(n)
    except ImportError:
        pass
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    return head if rest == 0 else head + (" and " if rest < 100 else ", ") + number_words(rest)


def default_chat_template() -> str:
    """The template SmolVLMProcessor forces for conversations with a video (transformers' own copy)."""
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    return DEFAULT_CHAT_TEMPLATE
