"""LLaVA-OneVision (and the LLaVA-Video checkpoints that share its class).

Video path: SigLIP on each 384 px frame (27x27 patches) -> projector -> 2x2 bilinear pooling to
14x14 = 196 tokens per frame -> one learned `image_newline` after the last frame. The prompt holds
one `<video>` token, which this adapter expands to one placeholder per video token; `forward` then
scatters the precomputed tokens into those slots in order. Positions are 1-D: after pruning the
kept tokens are contiguous, as in DyCoke's released code.
"""

from __future__ import annotations

import functools
import math

import torch

from dycoke_cli.errors import ModelError
from dycoke_cli.models.base import (FamilyAdapter, Pixels, Prompt, PrunedPrompt, VideoBlock, VideoFeatures,
                                    conversation, read_preprocessor, resize_normalize)
from dycoke_cli.models.tower import TowerState, attention_received, cell_patches, ragged_layers

_RESAMPLE = {2: "bilinear", 3: "bicubic", "bilinear": "bilinear", "bicubic": "bicubic"}


class LlavaOnevisionAdapter(FamilyAdapter):
    family = "LLaVA-OneVision"
    model_types = ("llava_onevision",)
    quant_skip_modules = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
    trailing_tokens = 1  # image_newline

    def __init__(self, config, tokenizer, folder, random_weights):
        super().__init__(config, tokenizer, folder, random_weights)
        settings = read_preprocessor(folder)
        side = config.vision_config.image_size
        size = settings.get("size") or {}
        self.size = (size.get("height", side), size.get("width", side))
        self.resample = _RESAMPLE.get(settings.get("resample", 3), "bicubic")
        self.scale = settings.get("rescale_factor", 1 / 255) if settings.get("do_rescale", True) else 1.0
        normalize = settings.get("do_normalize", True)
        self.mean = settings.get("image_mean", [0.5] * 3) if normalize else [0.0] * 3
        self.std = settings.get("image_std", [0.5] * 3) if normalize else [1.0] * 3
        self.video_token = config.video_token_index

    @staticmethod
    def model_class():
        from transformers import LlavaOnevisionForConditionalGeneration

        return LlavaOnevisionForConditionalGeneration

    def token_grid(self, height: int, width: int, frames: int) -> tuple[int, int]:
        side = math.ceil(self.config.vision_config.image_size // self.config.vision_config.patch_size / 2)
        return side, side  # every frame is resized to the same square: 14 x 14 at 384 px

    def preprocess(self, frames, clip) -> Pixels:
        pixels = resize_normalize(frames.pixels, self.size, self.mean, self.std, self.scale, self.resample)
        values = pixels.unsqueeze(0).to(self.model.device, self.model.dtype)  # (1, F, 3, S, S)
        return Pixels(values=values, times=tuple(frames.timestamps))

    @torch.no_grad()
    def encode(self, pixels: Pixels) -> VideoFeatures:
        frames = pixels.values.shape[1]
        out = self.model.model.get_video_features(pixel_values_videos=pixels.values, return_dict=True)
        pooled = out.pooler_output[0]  # (F*T + 1, D): frames in raster order, then the newline
        tokens = pooled[:-1].reshape(frames, -1, pooled.shape[-1])  # (F, T, D)
        side = math.isqrt(tokens.shape[1])
        return VideoFeatures(tokens=tokens, grid=(side, side), times=pixels.times, trailing=pooled[-1:])

    def video_block(self, features: VideoFeatures) -> VideoBlock:
        frames, per_frame = features.tokens.shape[:2]
        count = frames * per_frame + 1  # + the newline
        return VideoBlock(ids=[self.video_token] * count, slots=torch.arange(frames * per_frame).view(frames, -1))

    def prompt(self, turns, block: VideoBlock, features: VideoFeatures, system: str | None = None) -> Prompt:
        ids = self.render(conversation(turns, system, {"type": "video"}))
        if ids.count(self.video_token) != 1:
            raise ModelError("the chat template did not place exactly one video token in the prompt")
        at = ids.index(self.video_token)
        return Prompt(ids=ids[:at] + block.ids + ids[at + 1:], video_start=at, block=block)

    def generate_inputs(self, tokens, extras, features: VideoFeatures, prompt: PrunedPrompt) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooled = torch.cat([tokens, features.trailing]).unsqueeze(0)  # (1, N + 1, D)
        return {"mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=pooled)}}

    def text_layers(self) -> list:
        return list(self.model.model.language_model.layers)

    # ------------------------------------------------------------------ inside the tower

    def encoder_refusal(self) -> str | None:
        layer, strategy = self.config.vision_feature_layer, self.config.vision_feature_select_strategy
        if not isinstance(layer, int) or strategy != "full":
            return (f"{self.family} with vision_feature_layer={layer} and select strategy '{strategy}' "
                    "cannot take a selection inside its tower (only one layer, every patch: 'full')")
        return None

    def tower_depth(self) -> int:
        """SigLIP layers the features read: hidden_states[vision_feature_layer] is the output of this many."""
        layer, layers = self.config.vision_feature_layer, self.config.vision_config.num_hidden_layers
        return layers + 1 + layer if layer < 0 else layer

    @torch.no_grad()
    def encode_to(self, pixels: Pixels, layer: int) -> TowerState:
        tower = self.model.model.vision_tower
        frames = pixels.values.shape[1]
        hidden = tower.embeddings(pixels.values[0])  # (f, P, D): every patch of every frame
        for block in tower.encoder.layers[:layer]:
            hidden = block(hidden, None)
        return TowerState(hidden=hidden, layer=layer, frames=frames, times=pixels.times)

    tower_attention_supported = True

    def tower_patches(self, tokens_per_frame: int) -> int:
        return (self.config.vision_config.image_size // self.config.vision_config.patch_size) ** 2

    def tower_attention(self, state: TowerState) -> torch.Tensor:
        layer = self.model.model.vision_tower.encoder.layers[state.layer]
        return attention_received(layer, state.hidden)[:, self._pooling()[0]]  # (f, C, 4)

    def tower_cells(self, state: TowerState):
        footprint, weights = self._pooling()
        side = math.isqrt(footprint.shape[0])
        return state.hidden[:, footprint], weights, (side, side)  # (f, C, 4, D), (C, 4), cells grid

    @torch.no_grad()
    def encode_from(self, state: TowerState, keep: torch.Tensor) -> VideoFeatures:
        """Later SigLIP layers on each frame's kept footprints, the projector per patch, then the model's
        own 2x2 bilinear pooling over the frame's grid: a kept cell reads only patches that ran, so its
        token is exactly the pooling of what it reads; dropped cells' rows are zeroed."""
        model, tower = self.model.model, self.model.model.vision_tower
        footprint, _ = self._pooling()
        patches = [cell_patches(footprint, keep[i]) for i in range(state.frames)]  # (P_i,) each
        layers = tower.encoder.layers[state.layer:self.tower_depth()]
        ran = ragged_layers(layers, [state.hidden[i, p] for i, p in enumerate(patches)], tower.config)
        projected = model.multi_modal_projector(torch.cat(ran))  # (sum P_i, D')
        grid = projected.new_zeros(state.frames, state.hidden.shape[1], projected.shape[-1])  # (f, P, D')
        for i, (p, rows) in enumerate(zip(patches, projected.split([len(p) for p in patches]))):
            grid[i, p] = rows
        tokens = model.apply_pooling(grid) * keep[..., None].to(grid.dtype)  # (f, C, D')
        side = math.isqrt(tokens.shape[1])
        return VideoFeatures(tokens=tokens, grid=(side, side), times=state.times, present=keep.flatten(),
                             trailing=model.image_newline[None].detach().to(tokens.dtype),
                             patches_kept=tuple(len(p) for p in patches))

    @functools.cache
    def _pooling(self) -> tuple[torch.Tensor, torch.Tensor]:
        """((C, 4) the patches each pooled cell reads, (C, 4) their bilinear weights): the model's own
        pooling applied to one patch at a time, so the footprint is what the pooling really reads."""
        side = self.config.vision_config.image_size // self.config.vision_config.patch_size
        unit = torch.eye(side * side).view(side * side, 1, side, side)
        cells = math.ceil(side / 2)
        weights = torch.nn.functional.interpolate(unit, size=(cells, cells), mode="bilinear")
        weights = weights.view(side * side, cells * cells).T  # (C, P)
        footprint = weights.topk(4, dim=1).indices.sort(dim=1).values  # (C, 4): each cell reads 2x2 patches
        return footprint, weights.gather(1, footprint)
