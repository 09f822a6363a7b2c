"""The flag vocabulary shared by every command, each with its environment variable.

Commands declare their parameters with these aliases so `--frames` or `--model` mean the same thing
(and read the same variable) everywhere. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dycoke_cli.settings import Compression, Generation

MODEL = "Model"
VIDEO = "Video sampling"
COMPRESS = "Compression (DyCoke)"
GENERATE = "Generation"
OUTPUT = "Output"

Model = Annotated[str, typer.Option(
    "--model", "-m", envvar="DYCOKE_MODEL", rich_help_panel=MODEL,
    help="Hub id, local folder, or random spec (random:tiny, random:llava-onevision-0.5b, random:llava-onevision-7b).",
)]
Quant = Annotated[str, typer.Option(
    "--quant", envvar="DYCOKE_QUANT", rich_help_panel=MODEL,
    help="Weight quantization of the language model: auto (4bit on CUDA, none on CPU), 4bit, 8bit, none.",
)]
Device = Annotated[str, typer.Option(
    "--device", envvar="DYCOKE_DEVICE", rich_help_panel=MODEL, help="auto, cpu, cuda or cuda:N.",
)]
Dtype = Annotated[str, typer.Option(
    "--dtype", envvar="DYCOKE_DTYPE", rich_help_panel=MODEL, help="auto, bfloat16, float16 or float32.",
)]
Offline = Annotated[bool, typer.Option(
    "--offline", envvar="DYCOKE_OFFLINE", rich_help_panel=MODEL,
    help="Never touch the network; use only cached or local models (also HF_HUB_OFFLINE=1).",
)]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", rich_help_panel=MODEL, help="Allow a checkpoint's own Python code to run (off by default).",
)]

Frames = Annotated[int, typer.Option(
    "--frames", "-f", envvar="DYCOKE_FRAMES", min=1, rich_help_panel=VIDEO, help="Frames sampled uniformly.",
)]
Fps = Annotated[Optional[float], typer.Option(
    "--fps", envvar="DYCOKE_FPS", min=0.0, rich_help_panel=VIDEO, help="Sample at this rate instead of --frames.",
)]
MaxFrames = Annotated[Optional[int], typer.Option(
    "--max-frames", envvar="DYCOKE_MAX_FRAMES", min=1, rich_help_panel=VIDEO,
    help="Cap on frames with --fps (uniform over the range when it binds).",
)]
Start = Annotated[Optional[str], typer.Option(
    "--start", rich_help_panel=VIDEO, help="Range start: seconds or HH:MM:SS[.ms].",
)]
End = Annotated[Optional[str], typer.Option(
    "--end", rich_help_panel=VIDEO, help="Range end: seconds or HH:MM:SS[.ms].",
)]

TtmK = Annotated[float, typer.Option(
    "--ttm-k", envvar="DYCOKE_TTM_K", rich_help_panel=COMPRESS,
    help="TTM pruning rate K of a pruned frame (0 turns TTM off).",
)]
TtmVariant = Annotated[str, typer.Option(
    "--ttm-variant", envvar="DYCOKE_TTM_VARIANT", rich_help_panel=COMPRESS,
    help="clean (every window pruned, raster order) or reference (the released code's behaviour).",
)]
KvP = Annotated[float, typer.Option(
    "--kv-p", envvar="DYCOKE_KV_P", rich_help_panel=COMPRESS,
    help="Decode-time KV pruning rate P of visual entries (0 turns DP off).",
)]
KvLayer = Annotated[int, typer.Option(
    "--kv-layer", envvar="DYCOKE_KV_LAYER", rich_help_panel=COMPRESS,
    help="Layer L: attention at layer L-1 scores, layers L and up attend to the kept entries.",
)]
KvGate = Annotated[str, typer.Option(
    "--kv-gate", envvar="DYCOKE_KV_GATE", rich_help_panel=COMPRESS,
    help="When attention barely moves: reuse the last selection (reuse) or use the full cache (released).",
)]
NoCompress = Annotated[bool, typer.Option(
    "--no-compress", envvar="DYCOKE_NO_COMPRESS", rich_help_panel=COMPRESS, help="Turn both DyCoke stages off.",
)]

MaxNewTokens = Annotated[int, typer.Option(
    "--max-new-tokens", envvar="DYCOKE_MAX_NEW_TOKENS", min=1, rich_help_panel=GENERATE,
    help="Most tokens generated per answer.",
)]
Temperature = Annotated[float, typer.Option(
    "--temperature", envvar="DYCOKE_TEMPERATURE", min=0.0, rich_help_panel=GENERATE,
    help="0 decodes greedily; above 0 samples.",
)]
TopP = Annotated[float, typer.Option(
    "--top-p", envvar="DYCOKE_TOP_P", min=0.0, max=1.0, rich_help_panel=GENERATE, help="Nucleus sampling mass.",
)]
Seed = Annotated[int, typer.Option("--seed", envvar="DYCOKE_SEED", rich_help_panel=GENERATE, help="Sampling seed.")]

Json = Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="One JSON object per answer on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT, help="Print the answer alone.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=OUTPUT, help="Also list frame timestamps.")]
Debug = Annotated[bool, typer.Option(
    "--debug", envvar="DYCOKE_DEBUG", rich_help_panel=OUTPUT, help="Show tracebacks instead of one-line errors.",
)]

DEFAULTS = Compression()
DEFAULT_GENERATION = Generation()


def compression(no_compress: bool, ttm_k: float, ttm_variant: str, kv_p: float, kv_layer: int,
                kv_gate: str) -> Compression:
    if no_compress:
        return Compression(ttm_k=0.0, ttm_variant=ttm_variant, kv_p=0.0, kv_layer=kv_layer, kv_gate=kv_gate)
    return Compression(ttm_k, ttm_variant, kv_p, kv_layer, kv_gate).validate()


def generation(max_new_tokens: int, temperature: float, top_p: float, seed: int) -> Generation:
    return Generation(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)


def sampling(frames: int, fps: float | None, max_frames: int | None, start: str | None, end: str | None):
    from dycoke_cli.video import Sampling, parse_time

    return Sampling(
        frames=frames, fps=fps, max_frames=max_frames,
        start=parse_time(start) if start is not None else None,
        end=parse_time(end) if end is not None else None,
    )
