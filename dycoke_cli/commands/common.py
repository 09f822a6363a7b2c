"""What every command shares: the error-to-exit-code mapping, and opening a Session on a video in the
order that fails fast: settings, then the video file, then the model's configuration, then the
request against the model's limits, and only then decoding, loading weights and encoding."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer

from dycoke_cli.errors import DycokeError, describe, is_out_of_memory


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
        hint = "" if is_out_of_memory(exc) else " (rerun with --debug for the traceback)"
        render.error(describe(exc) + hint)
        raise typer.Exit(1)


def inspect(model) -> object:
    """The model's configuration, tokenizer and family adapter, no weights (a Hub model may download)."""
    from dycoke_cli import render
    from dycoke_cli.models import inspect_model

    with render.working(f"reading {model.model}"):
        return inspect_model(model.model, model.offline, model.trust_remote_code)


def load(info, model, device: str | None = None, verbose: bool = False, quiet: bool = False):
    """Load the weights with a spinner on stderr, then print the notices (none with -q; with -v, the
    choices too)."""
    from dycoke_cli import render
    from dycoke_cli.models import load_model

    with render.working(f"loading {model.model}"):
        lm = load_model(info, device=device or model.device, dtype=model.dtype, quant=model.quant)
    for line in ([] if quiet else lm.notices) + (lm.choices if verbose else []):
        render.notice(line)
    return lm


@dataclass
class Request:
    """One video and the questions to ask about it, resolved and checked, nothing heavy done yet."""

    info: object  # models.ModelInfo
    plan: object  # plan.Plan


def early_probe(video: Path, request):
    """Index the video and check the user's range against it before the model is looked at (the
    family's sampling is not known yet: a provisional uniform one stands in)."""
    from dycoke_cli.video import Sampling, probe_video

    probe = probe_video(video)
    probe.plan(request.resolve(Sampling()))
    return probe


def prepare(video: Path, questions: list[str], model, sampling, compress, generation, system=None) -> Request:
    """Settings, video file, model configuration, then the plan (the request against the model's limits)."""
    return prepare_all([video], questions, model, sampling, compress, generation, system)[0]


def prepare_all(videos: list[Path], questions: list[str], model, sampling, compress, generation,
                system=None) -> list[Request]:
    """`prepare` for several videos: settings once, every video probed, the model's configuration read
    once, one plan per video; a bad video fails here, before any weight loads."""
    from dycoke_cli.plan import plan_video

    spec = compress.spec()
    request = sampling.request()
    probes = [early_probe(video, request) for video in videos]
    info = inspect(model)
    return [Request(info=info, plan=plan_video(probe, request, spec, info.adapter, questions,
                                               generation.max_new_tokens, system)) for probe in probes]


def start_session(lm, request: Request, system: str | None = None):
    """Encode and select: everything before the first question about this video."""
    from dycoke_cli import render
    from dycoke_cli.engine import Session, encode

    with render.working(f"encoding {request.plan.frames.count} frames"):
        encoded = encode(lm, request.plan)
        return Session(lm, encoded, request.plan, system=system)


def open_session(request: Request, model, system: str | None = None, verbose: bool = False, quiet: bool = False):
    """Load, encode, select: everything before the first question."""
    return start_session(load(request.info, model, verbose=verbose, quiet=quiet), request, system)
