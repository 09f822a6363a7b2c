"""Running `dycoke profile`: one video and question under several compression settings, side by side.

Why it is shaped this way:
- Most methods leave the vision tower alone, so each *round* decodes the video once and encodes it
  once for every setting that encodes the same frames; a method that encodes fewer frames (uniform)
  gets its own encoding of those. A sweep then costs little more than its language-model work, yet
  each setting's vision figures are still measured ones.
- Rounds interleave the settings (round 1: A, B, C; round 2: A, B, C; ...), so slow drift of the
  machine (thermals, other load) spreads over all settings instead of biasing the last one.
- Round 0 is a warm-up (one-off allocations, kernel choice, lazy imports) and is not reported.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from dycoke_cli.compress.base import Budget
from dycoke_cli.compress.spec import CompressionSpec, parse_spec, parse_sweep
from dycoke_cli.errors import SettingsError
from dycoke_cli.limits import check_settings
from dycoke_cli.profile.flops import LMDims
from dycoke_cli.profile.report import SHARED_STAGES, build_report
from dycoke_cli.settings import Generation

DEFAULT_SPECS = ("none", "dycoke")


def plan_specs(compress: list[str] | None, sweep: str | None, budget: str | None = None) -> list[CompressionSpec]:
    """The settings to run, in order: each --compress (default none, dycoke; just none with a sweep),
    then one per --sweep value; --budget applies to every setting that takes one."""
    given = compress or (["none"] if sweep else list(DEFAULT_SPECS))
    specs = [parse_spec(text) for text in given] + (parse_sweep(sweep) if sweep else [])
    check_settings(len(specs))
    if budget is not None:
        shared = Budget.parse(budget)
        specs = [s if s.method == "none" else s.with_budget(shared) for s in specs]
    twice = [label for label, count in Counter(s.label for s in specs).items() if count > 1]
    if twice:
        raise SettingsError(f"setting '{twice[0]}' is listed twice")
    return specs


def run_profile(lm, video, plan, question: str, specs: list[CompressionSpec], generation: Generation,
                repeats: int, first_frames=None, on_progress: Callable[[str], None] = lambda _: None) -> dict:
    """Warm-up round, then `repeats` measured rounds. `plan` is the video's frame plan; `first_frames`
    (decoded frames and their decode time), if given, serve the warm-up round."""
    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.stats import peak_memory, start_peak_window
    from dycoke_cli.video import decode_plan

    layers = lm.adapter.text_config.num_hidden_layers
    for spec in specs:  # before minutes of work, not when the warm-up reaches the setting
        try:
            spec.build().check_model(layers, lm.adapter.min_prune_layer)
        except SettingsError as exc:
            raise SettingsError(f"--compress '{spec.label}': {exc}") from None
    runs: dict[str, list[dict]] = {s.label: [] for s in specs}
    answers: dict[str, list[tuple[str, list[int]]]] = {s.label: [] for s in specs}
    encodings, resettable = [], True
    for round_ in range(repeats + 1):
        name = "warm-up" if round_ == 0 else f"round {round_}/{repeats}"
        on_progress(f"{name}: decoding the video")
        if round_ == 0 and first_frames is not None:
            frames, decode_s = first_frames
        else:
            started = time.perf_counter()
            frames = decode_plan(plan)
            decode_s = time.perf_counter() - started
        on_progress(f"{name}: encoding {len(frames.timestamps)} frames")
        resettable &= start_peak_window(lm.device)
        encoded = encode_frames(lm, video, frames, decode_s)
        if round_:
            encodings.append({"round": round_, **{k: getattr(encoded.stats, k) for k in SHARED_STAGES},
                              "memory": peak_memory(lm.device)})
        for spec in specs:  # a method that encodes fewer frames (uniform) encodes them in its Session
            on_progress(f"{name}: {spec.label}")
            resettable &= start_peak_window(lm.device)
            answer = Session(lm, encoded, spec.build(), reuse_prefix=False).ask(question, generation)
            if round_:
                runs[spec.label].append(answer.stats.to_dict())
                answers[spec.label].append((answer.text, answer.token_ids))
    dims = LMDims.from_config(lm.adapter.text_config)
    return build_report(video, question, [s.label for s in specs], generation, dims, runs, answers, encodings,
                        resettable)
