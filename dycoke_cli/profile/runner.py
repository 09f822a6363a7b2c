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

from collections.abc import Callable

from dycoke_cli.profile.flops import LMDims, TowerDims
from dycoke_cli.profile.report import SHARED_STAGES, build_report
from dycoke_cli.settings import Generation


def run_profile(lm, plans: list, question: str, generation: Generation, repeats: int,
                on_progress: Callable[[str], None] = lambda _: None,
                on_answer: Callable[[str, object, object, object], None] | None = None, cache=None) -> dict:
    """Warm-up round, then `repeats` measured rounds of every setting's plan (plan.Plan, one per setting,
    in the order of `plans`; their labels come from the specs they were planned from). `on_answer`
    (label, plan, session, answer) sees each setting's answer of the last round, after it is measured.
    With a video cache (cache.VideoCache) the rounds after the warm-up read their encodings from it."""
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
            encoded = encode(lm, first, cache)
            if round_:
                encodings.append({"round": round_, "encoding": index, "settings": [label for label, _ in members],
                                  "frames": encoded.stats.frames, "frame_timestamps": encoded.stats.frame_timestamps,
                                  **{k: getattr(encoded.stats, k) for k in SHARED_STAGES},
                                  "memory": peak_memory(lm.device)})
            for label, plan in members:
                on_progress(f"{name}: {label}")
                resettable &= start_peak_window(lm.device)
                session = Session(lm, encoded, plan, reuse_prefix=False)
                answer = session.ask(question, generation)
                if round_:
                    runs[label].append(answer.stats.to_dict())
                    answers[label].append((answer.text, answer.token_ids))
                if round_ == repeats and on_answer is not None:
                    on_answer(label, plan, session, answer)
            encoded = session = None  # this encoding's tokens go before the next one is made
    dims = LMDims.from_config(lm.adapter.text_config)
    first_plan = plans[0][1]
    return build_report(first_plan.video, question, labels, generation, dims, TowerDims.from_adapter(lm.adapter),
                        runs, answers, encodings, resettable, video_cache=cache is not None and cache.enabled)
