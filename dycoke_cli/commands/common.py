"""What every command shares: the error-to-exit-code mapping, model loading with a spinner, and
opening a Session on a video (bad input reported before the slow model load)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import typer

from dycoke_cli.errors import DycokeError


@contextmanager
def errors_to_exit(debug: bool):
    """The one place where failures become a message and an exit code (2 bad input, 1 runtime, 130 Ctrl-C)."""
    from dycoke_cli import render

    debug = debug or os.environ.get("DYCOKE_DEBUG", "") not in ("", "0")
    try:
        yield
    except DycokeError as exc:
        if debug:
            raise
        render.error(str(exc))
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        render.error("interrupted")
        raise typer.Exit(130)
    except typer.Exit:
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


def load(model: str, device: str, dtype: str, quant: str, offline: bool, trust_remote_code: bool):
    """Load the model with a spinner on stderr, then print its notices."""
    from dycoke_cli import render
    from dycoke_cli.models import load_model

    with render.stderr.status(f"loading {model}", spinner="dots"):
        lm = load_model(model, device=device, dtype=dtype, quant=quant, offline=offline,
                        trust_remote_code=trust_remote_code)
    for line in lm.notices:
        render.notice(line)
    return lm


def decode_video(video: Path, sampling):
    """Read the sampled frames, timed: done before the model loads so a bad video fails fast."""
    import time

    from dycoke_cli.video import read_frames

    started = time.perf_counter()
    frames = read_frames(video, sampling)
    return frames, time.perf_counter() - started


def open_session(video: Path, sampling, compression, model, device, dtype, quant, offline, trust_remote_code):
    """Decode (errors first), load, encode, compress: everything before the first question."""
    from dycoke_cli import render
    from dycoke_cli.engine import Session, encode_frames

    frames, decode_s = decode_video(video, sampling)
    lm = load(model, device, dtype, quant, offline, trust_remote_code)
    with render.stderr.status("encoding video", spinner="dots"):
        encoded = encode_frames(lm, video, frames, decode_s)
        return Session(lm, encoded, compression)
