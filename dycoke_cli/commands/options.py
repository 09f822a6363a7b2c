"""The flag vocabulary shared by every command, declared once, each flag with its environment variable.

Flags come in groups (model, video sampling, compression, generation). A group is a dataclass whose
fields carry their Typer declaration; `with_flags` adds a group's fields to a command's signature
and hands the command one filled-in dataclass per group, so `ask`, `chat`, `run` and `profile` share
the declarations instead of repeating twenty parameters each. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, get_type_hints

import typer

from dycoke_cli.commands.complete import compress_values, model_values
from dycoke_cli.models.source import DEFAULT_MODEL
from dycoke_cli.settings import Generation

MODEL = "Model"
VIDEO = "Video sampling"
COMPRESS = "Compression"
GENERATE = "Generation"
OUTPUT = "Output"

QuantChoice = Literal["auto", "4bit", "8bit", "none"]
MAX_SEED = 2**63 - 1  # a signed 64-bit seed: within what torch and numpy seeding accept
DtypeChoice = Literal["auto", "bfloat16", "float16", "float32"]


def _compress_help() -> str:
    return ("METHOD[:KEY=VALUE,...], e.g. none, dycoke:k=0.5, evs:rate=0.75, fastv:layer=2,rate=0.5. "
            "dycoke methods lists every method and its keys.")


MAX_FPS = 1000.0


def _positive_rate(value: float | None) -> float | None:
    """--fps is a rate: more than 0 (0 would sample nothing) and at most MAX_FPS."""
    if value is not None and not 0 < value <= MAX_FPS:  # NaN fails both comparisons
        raise typer.BadParameter(f"{value:g} is not a frame rate: give more than 0, at most {MAX_FPS:g}")
    return value


BUDGET_HELP = ("The visual tokens KEPT for the model: a share with a decimal point or % (0.25, 25%; 1.0 keeps "
               "all) or a whole number of tokens (300; above the video's, all are kept). The method solves its own "
               "key (rate= is the share DROPPED).")


@dataclass
class ModelFlags:
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="ID", envvar="DYCOKE_MODEL", rich_help_panel=MODEL, autocompletion=model_values,
        help="Hub id, local folder, builtin:shapes, or a random-weight spec such as random:tiny "
             "(dycoke models lists them).")] = DEFAULT_MODEL
    quant: Annotated[QuantChoice, typer.Option(
        "--quant", envvar="DYCOKE_QUANT", rich_help_panel=MODEL,
        help="bitsandbytes weights of the language model; auto = 4bit on CUDA, none on the CPU.")] = "auto"
    device: Annotated[str, typer.Option(
        "--device", metavar="DEVICE", envvar="DYCOKE_DEVICE", rich_help_panel=MODEL,
        help="auto, cpu, cuda or cuda:N; auto falls back to the CPU.")] = "auto"
    dtype: Annotated[DtypeChoice, typer.Option(
        "--dtype", envvar="DYCOKE_DTYPE", rich_help_panel=MODEL,
        help="auto: bfloat16 on GPUs that have it; on the CPU the faster of bfloat16 and float32 for this "
             "processor.")] = "auto"
    offline: Annotated[bool, typer.Option(
        "--offline", envvar="DYCOKE_OFFLINE", rich_help_panel=MODEL,
        help="Never touch the network; cached or local models only (also HF_HUB_OFFLINE=1).")] = False
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", envvar="DYCOKE_TRUST_REMOTE_CODE", rich_help_panel=MODEL,
        help="Allow a checkpoint's own Python code to run.")] = False


@dataclass
class SamplingFlags:
    frames: Annotated[Optional[int], typer.Option(
        "--frames", "-f", metavar="N", envvar="DYCOKE_FRAMES", min=1, rich_help_panel=VIDEO, show_default=False,
        help="Frames sampled uniformly [default: the model family's, 32 for LLaVA-OneVision].")] = None
    fps: Annotated[Optional[float], typer.Option(
        "--fps", metavar="FPS", envvar="DYCOKE_FPS", callback=_positive_rate, rich_help_panel=VIDEO,
        help=f"Sample at this rate instead of --frames (more than 0, at most {MAX_FPS:g}).")] = None
    max_frames: Annotated[Optional[int], typer.Option(
        "--max-frames", metavar="N", envvar="DYCOKE_MAX_FRAMES", min=1, rich_help_panel=VIDEO,
        help="Cap on frames with --fps (uniform over the range when it binds).")] = None
    start: Annotated[Optional[str], typer.Option(
        "--start", metavar="TIME", envvar="DYCOKE_START", rich_help_panel=VIDEO, help="Range start: seconds or HH:MM:SS[.ms].")] = None
    end: Annotated[Optional[str], typer.Option(
        "--end", metavar="TIME", envvar="DYCOKE_END", rich_help_panel=VIDEO, help="Range end: seconds or HH:MM:SS[.ms].")] = None

    def request(self):
        """The sampling asked for (video.SamplingRequest): the plan resolves it against the family's."""
        from dycoke_cli.video import SamplingRequest, parse_time

        return SamplingRequest(
            frames=self.frames, fps=self.fps, max_frames=self.max_frames,
            start=parse_time(self.start) if self.start is not None else None,
            end=parse_time(self.end) if self.end is not None else None,
        )


@dataclass
class CompressFlags:
    compress: Annotated[Optional[str], typer.Option(
        "--compress", "-c", metavar="SPEC", envvar="DYCOKE_COMPRESS", rich_help_panel=COMPRESS, show_default="dycoke",
        autocompletion=compress_values,
        help=_compress_help())] = None
    budget: Annotated[Optional[str], typer.Option(
        "--budget", "-b", metavar="B", envvar="DYCOKE_BUDGET", rich_help_panel=COMPRESS,
        help=BUDGET_HELP)] = None
    no_compress: Annotated[bool, typer.Option(
        "--no-compress", envvar="DYCOKE_NO_COMPRESS", rich_help_panel=COMPRESS,
        help="Same as --compress none.")] = False

    def spec(self):
        from dycoke_cli.compress.spec import resolve

        return resolve(self.compress, self.no_compress, self.budget)


@dataclass
class GenerationFlags:
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", metavar="N", envvar="DYCOKE_MAX_NEW_TOKENS", min=1, max=1_000_000, rich_help_panel=GENERATE,
        help="Most tokens generated per answer.")] = Generation.max_new_tokens
    temperature: Annotated[float, typer.Option(
        "--temperature", metavar="T", envvar="DYCOKE_TEMPERATURE", min=0.0, max=100.0, rich_help_panel=GENERATE,
        help="0 decodes greedily; above 0 samples.")] = 0.0
    top_p: Annotated[float, typer.Option(
        "--top-p", metavar="P", envvar="DYCOKE_TOP_P", min=0.0, max=1.0, rich_help_panel=GENERATE,
        help="Nucleus sampling mass.")] = 1.0
    seed: Annotated[int, typer.Option(
        "--seed", metavar="N", envvar="DYCOKE_SEED", min=0, max=MAX_SEED, rich_help_panel=GENERATE,
        help="Sampling seed.")] = 0
    system: Annotated[Optional[str], typer.Option(
        "--system", metavar="TEXT", envvar="DYCOKE_SYSTEM", rich_help_panel=GENERATE, show_default=False,
        help="A system prompt placed before the conversation.")] = None

    def generation(self) -> Generation:
        return Generation(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                          seed=self.seed)


Debug = Annotated[bool, typer.Option(
    "--debug", envvar="DYCOKE_DEBUG", rich_help_panel=OUTPUT, help="Show tracebacks instead of one-line errors.",
)]
Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", rich_help_panel=OUTPUT,
    help="Frame timestamps, choices made (dtype, device) and library logs.")]
Json = Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="One JSON object per answer on stdout.")]
Listing = Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="JSON on stdout instead of the table.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT, help="Print the answer alone.")]


def with_flags(**groups: type) -> callable:
    """Give a command the fields of each flag group as parameters; the command receives one instance
    per group under the keyword given, e.g. with_flags(model=ModelFlags) -> `model: ModelFlags`."""

    def decorate(command):
        signature = inspect.signature(command)
        hints = get_type_hints(command, include_extras=True)  # resolved here: the wrapper's globals differ
        own = [p.replace(annotation=hints.get(name, p.annotation)) for name, p in signature.parameters.items()
               if name not in groups]
        keyword = inspect.Parameter.KEYWORD_ONLY
        added = [inspect.Parameter(f.name, keyword, default=f.default, annotation=group_hints[f.name])
                 for group in groups.values()
                 for group_hints in [get_type_hints(group, include_extras=True)]
                 for f in dataclasses.fields(group)]

        @functools.wraps(command)
        def run(*args, **kwargs):
            for keyword_name, group in groups.items():
                kwargs[keyword_name] = group(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(group)})
            return command(*args, **kwargs)

        run.__signature__ = signature.replace(parameters=own + added)
        run.__annotations__ = {p.name: p.annotation for p in own + added}
        del run.__wrapped__  # Typer must read this signature, not the command's
        return run

    return decorate


def usage_message(exc: Exception) -> str:
    """A usage error of the command-line parser (an unknown option, a value out of range) on one line."""
    return " ".join(exc.format_message().split())


def checked_values(values: dict[str, object], **groups: type) -> dict[str, object]:
    """Values for some flags of `groups` by field name (a server request's settings), checked and converted by
    the declarations the command line parses them with: the same types, ranges and messages. A bad value
    raises BadInputError with the command line's message."""
    from dycoke_cli.errors import BadInputError

    argv = [f"--{name.replace('_', '-')}={value}" for name, value in values.items()]
    try:
        context = _parser(tuple(groups.items())).make_context("dycoke", argv)
    except typer.TyperException as exc:
        raise BadInputError(usage_message(exc)) from None
    return {name: context.params[name] for name in values}


@functools.lru_cache(maxsize=None)
def _parser(groups: tuple[tuple[str, type], ...]):
    """A command holding exactly these flag groups, built once, used only to parse values."""
    import typer.main

    def settings() -> None:
        """Parses flag values only."""

    app = typer.Typer()
    app.command()(with_flags(**dict(groups))(settings))
    return typer.main.get_command(app)
