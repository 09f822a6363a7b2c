"""What every command shares: the error-to-exit-code mapping, and opening a Session on a video in the
order that fails fast: settings, then the video file, then the model's configuration, then the
request against the model's limits, and only then decoding, loading weights and encoding."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer

from dycoke_cli.errors import DycokeError


@contextmanager
def errors_to_exit(debug: bool, verbose: bool = False):
    """The one place where failures become a message and an exit code (2 bad input, 1 runtime, 130 Ctrl-C,
    143 SIGTERM). A stdout that went away is left to the entry point (dycoke_cli.stdout). Third-party
    warnings and logs stay off the terminal unless -v or --debug."""
    from dycoke_cli import env, render, signals
    from dycoke_cli.stdout import StdoutError

    debug = debug or env.flag("DYCOKE_DEBUG")
    render.quiet_libraries(verbose or debug)
    try:
        yield
    except DycokeError as exc:
        if debug:
            raise
        render.error(str(exc))
        raise typer.Exit(exc.exit_code)
    except (KeyboardInterrupt, signals.Terminated) as exc:
        render.error("interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated")
        raise typer.Exit(signals.status_of(exc))
    except (typer.Exit, StdoutError):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        if "out of memory" in str(exc).lower():
            render.error(f"out of memory: {str(exc).splitlines()[0]} (try fewer --frames, --quant 4bit)")
        else:
            render.error(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unexpected failure'}"
                         " (rerun with --debug for the traceback)")
        raise typer.Exit(1)


def inspect(model) -> object:
    """The model's configuration, tokenizer and family adapter, no weights (a Hub model may download)."""
    from dycoke_cli import render
    from dycoke_cli.models import inspect_model

    with render.working(f"reading {model.model}"):
        return inspect_model(model.model, model.offline, model.trust_remote_code)


def load(info, model, device: str | None = None, verbose: bool = False):
    """Load the weights with a spinner on stderr, then print the notices (and, with -v, the choices)."""
    from dycoke_cli import render
    from dycoke_cli.models import load_model

    with render.working(f"loading {model.model}"):
        lm = load_model(info, device=device or model.device, dtype=model.dtype, quant=model.quant)
    for line in lm.notices + (lm.choices if verbose else []):
        render.notice(line)
    return lm


@dataclass
class Request:
    """One video and the questions to ask about it, resolved and checked, nothing heavy done yet."""

    video: Path
    info: object  # models.ModelInfo
    method: object  # compress.Method
    plan: object  # video.FramePlan


def prepare(video: Path, questions: list[str], model, sampling, compress, generation, system=None) -> Request:
    """Settings, video file, model configuration, then the request against the model's limits."""
    from dycoke_cli.limits import check_context
    from dycoke_cli.video import probe_video

    spec = compress.spec()
    given = sampling.sampling()  # times parsed, counts checked
    probe = probe_video(video)
    probe.plan(given)  # a range outside the video is reported before the model is looked at
    info = inspect(model)
    method = spec.build()
    method.check_model(info.layers, info.adapter.min_prune_layer)
    explicit = sampling.frames is not None or sampling.fps is not None
    plan = probe.plan(sampling.sampling(info.adapter.default_frames) if explicit else
                      _with_range(info.adapter.default_sampling(), sampling))
    check_context(info.adapter, method, plan.count, plan.size, questions, system, generation.max_new_tokens)
    return Request(video=video, info=info, method=method, plan=plan)


def _with_range(default, flags):
    """The family's default sampling, restricted to the user's --start/--end and --max-frames."""
    from dataclasses import replace

    given = flags.sampling()
    return replace(default, start=given.start, end=given.end, max_frames=given.max_frames or default.max_frames)


def open_session(request: Request, model, system: str | None = None, verbose: bool = False):
    """Decode, load, encode, select: everything before the first question."""
    from dycoke_cli import render
    from dycoke_cli.engine import Session, encode_frames
    from dycoke_cli.video import decode_plan

    started = time.perf_counter()
    with render.working(f"decoding {request.plan.count} frames"):
        frames = decode_plan(request.plan)
    decode_s = time.perf_counter() - started
    lm = load(request.info, model, verbose=verbose)
    with render.working(f"encoding {len(frames.timestamps)} frames"):
        encoded = encode_frames(lm, request.video, frames, decode_s, request.method)
        return Session(lm, encoded, request.method, system=system)
