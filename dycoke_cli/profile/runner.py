"""Running `dycoke profile`: one video and question under several compression settings, side by side.

Why it is shaped this way:
- Most methods leave the vision tower alone, so each *round* decodes and encodes the video once for
  all the settings that encode the same frames (their plans' encoding keys are equal); a method that
  encodes fewer frames (uniform) gets its own encoding of those. A sweep then costs little more than
  its language-model work, yet each setting's vision figures are still measured ones.
- Rounds interleave the settings (round 1: A, B, C; round 2: A, B, C; ...), so slow drift of the
  machine (thermals, other load) spreads over all settings instead of biasing the last one.
- Round 0 is a warm-up (one-off allocations, kernel choice, lazy imports) and is not reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from dycoke_cli.compress.base import Budget
from dycoke_cli.compress.spec import CompressionSpec, parse_spec, parse_sweep
from dycoke_cli.errors import SettingsError
from dycoke_cli.limits import check_settings
from dycoke_cli.profile.flops import LMDims, TowerDims
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


def run_profile(lm, plans: list, question: str, generation: Generation, repeats: int,
                on_progress: Callable[[str], None] = lambda _: None) -> dict:
    """Warm-up round, then `repeats` measured rounds of every setting's plan (plan.Plan, one per setting,
    in the order of `plans`; their labels come from the specs they were planned from)."""
    from dycoke_cli.engine import Session, encode
    from dycoke_cli.stats import peak_memory, start_peak_window

    labels = [label for label, _ in plans]
    runs: dict[str, list[dict]] = {label: [] for label in labels}
    answers: dict[str, list[tuple[str, list[int]]]] = {label: [] for label in labels}
    groups: dict[tuple, list[tuple[str, object]]] = {}  # settings that share one encoding, first-seen order
    for label, plan in plans:
        groups.setdefault(plan.encoding_key, []).append((label, plan))
    encodings, resettable = [], True
    for round_ in range(repeats + 1):
        name = "warm-up" if round_ == 0 else f"round {round_}/{repeats}"
        for index, members in enumerate(groups.values()):
            first = members[0][1]
            on_progress(f"{name}: decoding and encoding {first.frames.count} frames")
            resettable &= start_peak_window(lm.device)
            encoded = encode(lm, first)
            if round_:
                encodings.append({"round": round_, "encoding": index, "settings": [label for label, _ in members],
                                  "frames": encoded.stats.frames, "frame_timestamps": encoded.stats.frame_timestamps,
                                  **{k: getattr(encoded.stats, k) for k in SHARED_STAGES},
                                  "memory": peak_memory(lm.device)})
            for label, plan in members:
                on_progress(f"{name}: {label}")
                resettable &= start_peak_window(lm.device)
                answer = Session(lm, encoded, plan, reuse_prefix=False).ask(question, generation)
                if round_:
                    runs[label].append(answer.stats.to_dict())
                    answers[label].append((answer.text, answer.token_ids))
            encoded = None  # this encoding's tokens go before the next one is made
    dims = LMDims.from_config(lm.adapter.text_config)
    first_plan = plans[0][1]
    return build_report(first_plan.video, question, labels, generation, dims, TowerDims.from_adapter(lm.adapter),
                        runs, answers, encodings, resettable)
