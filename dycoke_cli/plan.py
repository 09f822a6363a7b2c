"""Settings, the video's probe and the model's configuration, resolved once into a frozen Plan.

Every command (ask, chat, run per record group, profile per setting), the Python API, the GPU suite
and `serve` build their request here, the same way, so every check happens once, before any weight
loads, with the same message everywhere:

  settings (compression spec, sampling request, generation)   -- parsed and range-checked by the CLI
  + the model's configuration (family adapter, no weights)   -> the method checked against its depth
  + the video's probe (its frame index, nothing decoded)     -> the frames the sampling picks, with
                                                                the user's range applied to the
                                                                family's default sampling
  -> the layout of those frames (tokens per frame, groups) -> the method's parameters solved for it
     (pure), its frame subset, the visual tokens that will reach the model -> the context check.

The engine takes a plan and derives nothing again: it decodes exactly `plan.frames`, and reports
`plan.params` as the method's effective parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dycoke_cli.compress.base import Method, VisualLayout
from dycoke_cli.compress.spec import CompressionSpec
from dycoke_cli.errors import SettingsError
from dycoke_cli.video.frames import SamplingRequest


@dataclass(frozen=True)
class Plan:
    """One video under one compression setting, decided before any weight loads.

    sampled: every frame the sampling picks (timestamps, size; nothing decoded).
    layout: the layout of those frames before the method's subset: what the method is solved on.
    params: the method's effective parameters for that layout, each within its declared range.
    subset: positions of the sampled frames the method encodes (None: all of them).
    frames: the frames to decode and encode (`sampled` narrowed to `subset`).
    visual_tokens: the visual tokens that will reach the language model (trailing ones included).
    notes: one-line remarks for the user (e.g. a budget above the video's tokens keeps them all).
    """

    video: Path
    sampled: object  # video.FramePlan
    layout: VisualLayout
    method: Method
    params: dict
    subset: tuple[int, ...] | None
    frames: object  # video.FramePlan
    visual_tokens: int
    notes: tuple[str, ...] = ()

    @property
    def encoding_key(self) -> tuple:
        """What decides the encoded features besides the model: settings with equal keys share one
        encoding (profile, run with several settings)."""
        return (str(self.video), tuple(self.frames.wanted), self.method.encoding_settings())


def check_method(method: Method, adapter, where: str | None = None) -> None:
    """A method's settings against the model: the language model's depth (and the first layer its
    sequence may shrink), and a selection inside the vision tower against the family and its depth."""
    try:
        method.check_model(adapter.text_config.num_hidden_layers, adapter.min_prune_layer)
        layer = method.encoder_layer()
        if layer is not None:
            refusal = adapter.encoder_refusal()
            if refusal:
                raise SettingsError(f"{method.name}: {refusal}")
            last = adapter.tower_depth() - (1 if method.reads_attention else 0)  # attention: of a layer that runs
            if layer > last:
                raise SettingsError(f"{method.name}: encoder_layer={layer} is past this vision tower's "
                                    f"{adapter.tower_depth()} layers; use 0 to {last}")
            if method.reads_attention and not adapter.tower_attention_supported:
                raise SettingsError(f"{method.name} reads the vision tower's attention, which is computed here for "
                                    f"SigLIP towers only (LLaVA-OneVision, SmolVLM2), not {adapter.family}'s")
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}" if where else str(exc)) from None


def build_method(compression: str | CompressionSpec | Method | None) -> Method:
    """A method instance from a spec string (`dycoke:k=0.5`), a parsed spec, or an instance as is."""
    from dycoke_cli.compress.spec import DEFAULT, parse_spec

    if compression is None:
        compression = DEFAULT
    if isinstance(compression, str):
        compression = parse_spec(compression)
    return compression.build() if isinstance(compression, CompressionSpec) else compression


def plan_video(probe, request: SamplingRequest, compression, adapter, questions: list | None = None,
               max_new_tokens: int = 0, system: str | None = None) -> Plan:
    """The plan of one video (its probe) under one compression setting on one model (its adapter).

    `questions`, when given, are checked with `max_new_tokens` and `system` against the model's
    context: a prompt that cannot fit is refused here, before anything is decoded or loaded. An item
    may be a whole conversation (limits.check_context), as `serve` receives one.
    """
    from dycoke_cli.limits import check_context

    method = build_method(compression)
    check_method(method, adapter)
    sampled = probe.plan(request.resolve(adapter.default_sampling()))
    layout = adapter.video_layout(sampled.timestamps, sampled.size)
    params = method.solve(layout)
    subset = method.frame_subset(layout)
    frames = sampled.narrowed(subset)
    encoded = layout if subset is None else adapter.video_layout(frames.timestamps, frames.size)
    visual = method.expected_tokens(encoded) + adapter.trailing_tokens
    if questions:
        check_context(adapter, visual, frames.count, questions, system, max_new_tokens)
    notes = ()
    if method.budget is not None and method.budget.exceeds(layout.total):
        notes = (f"--budget {method.budget} is above the video's {layout.total:,} visual tokens: all are kept",)
    return Plan(video=Path(probe.path), sampled=sampled, layout=layout, method=method, params=params,
                subset=None if subset is None else tuple(subset), frames=frames, visual_tokens=visual, notes=notes)
