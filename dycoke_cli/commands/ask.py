"""`dycoke ask` and `dycoke chat`: questions about one video, answered against one encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit, open_session
from dycoke_cli.models.source import DEFAULT_MODEL


def ask(
    video: Annotated[Path, typer.Argument(help="Video file.", show_default=False)],
    questions: Annotated[list[str], typer.Argument(help="One or more questions; the video is encoded once.",
                                                   show_default=False)],
    model: o.Model = DEFAULT_MODEL, quant: o.Quant = "auto", device: o.Device = "auto", dtype: o.Dtype = "auto",
    offline: o.Offline = False, trust_remote_code: o.TrustRemoteCode = False,
    frames: o.Frames = 32, fps: o.Fps = None, max_frames: o.MaxFrames = None, start: o.Start = None,
    end: o.End = None,
    ttm_k: o.TtmK = o.DEFAULTS.ttm_k, ttm_variant: o.TtmVariant = o.DEFAULTS.ttm_variant,
    kv_p: o.KvP = o.DEFAULTS.kv_p, kv_layer: o.KvLayer = o.DEFAULTS.kv_layer,
    kv_gate: o.KvGate = o.DEFAULTS.kv_gate, no_compress: o.NoCompress = False,
    max_new_tokens: o.MaxNewTokens = o.DEFAULT_GENERATION.max_new_tokens,
    temperature: o.Temperature = 0.0, top_p: o.TopP = 1.0, seed: o.Seed = 0,
    json_out: o.Json = False, quiet: o.Quiet = False, verbose: o.Verbose = False, debug: o.Debug = False,
) -> None:
    """Answer questions about a video; the answer streams to stdout, stats go to stderr."""

    with errors_to_exit(debug):
        from dycoke_cli import render

        compression = o.compression(no_compress, ttm_k, ttm_variant, kv_p, kv_layer, kv_gate)
        sampling = o.sampling(frames, fps, max_frames, start, end)
        generation = o.generation(max_new_tokens, temperature, top_p, seed)
        session = open_session(video, sampling, compression, model, device, dtype, quant, offline,
                               trust_remote_code)
        for i, question in enumerate(questions, 1):
            if len(questions) > 1 and not (json_out or quiet):
                render.question_header(i, len(questions), question)
            answer = session.ask(question, generation, on_text=None if json_out else render.write_text)
            if json_out:
                render.print_json({"video": str(video), "question": question, "answer": answer.text,
                                   **answer.stats.to_dict()})
                continue
            render.end_answer()
            if not quiet:
                render.print_stats(answer.stats, verbose)


def chat(
    video: Annotated[Path, typer.Argument(help="Video file.", show_default=False)],
    model: o.Model = DEFAULT_MODEL, quant: o.Quant = "auto", device: o.Device = "auto", dtype: o.Dtype = "auto",
    offline: o.Offline = False, trust_remote_code: o.TrustRemoteCode = False,
    frames: o.Frames = 32, fps: o.Fps = None, max_frames: o.MaxFrames = None, start: o.Start = None,
    end: o.End = None,
    ttm_k: o.TtmK = o.DEFAULTS.ttm_k, ttm_variant: o.TtmVariant = o.DEFAULTS.ttm_variant,
    kv_p: o.KvP = o.DEFAULTS.kv_p, kv_layer: o.KvLayer = o.DEFAULTS.kv_layer,
    kv_gate: o.KvGate = o.DEFAULTS.kv_gate, no_compress: o.NoCompress = False,
    max_new_tokens: o.MaxNewTokens = o.DEFAULT_GENERATION.max_new_tokens,
    temperature: o.Temperature = 0.0, top_p: o.TopP = 1.0, seed: o.Seed = 0,
    verbose: o.Verbose = False, debug: o.Debug = False,
) -> None:
    """Talk about a video: each turn continues the conversation. /reset, /stats, /quit."""
    from dycoke_cli.commands.chat import run_chat

    with errors_to_exit(debug):
        compression = o.compression(no_compress, ttm_k, ttm_variant, kv_p, kv_layer, kv_gate)
        sampling = o.sampling(frames, fps, max_frames, start, end)
        generation = o.generation(max_new_tokens, temperature, top_p, seed)
        session = open_session(video, sampling, compression, model, device, dtype, quant, offline,
                               trust_remote_code)
        run_chat(session, generation, verbose)
