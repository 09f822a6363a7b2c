"""Every byte the user sees: answers on stdout, tables, notices and errors on stderr, or JSON.

Rich is imported here and nowhere else, so the rest of the code hands over plain data and this
module decides how it looks.
"""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def write_text(text: str) -> None:
    """A piece of a streamed answer, flushed so it shows as it is generated."""
    sys.stdout.write(text)
    sys.stdout.flush()


def end_answer() -> None:
    write_text("\n")


def print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


def notice(message: str) -> None:
    stderr.print(f"[yellow]note:[/] {escape(message)}", markup=True, highlight=False)


def question_header(index: int, total: int, question: str) -> None:
    stderr.print(f"[bold]Q{index}/{total}:[/] {escape(question)}", markup=True, highlight=False)


def format_seconds(s: float) -> str:
    """Seconds for people: milliseconds below one second. Shared by every table."""
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def stats_table(stats, verbose: bool = False) -> Table:
    """The per-answer table: what was run, what compression kept, where the time and memory went."""
    d = stats.to_dict()
    table = Table(show_header=False, box=None, pad_edge=False, title="dycoke stats", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    add = table.add_row
    add("model", f"{d['model']} ({d['family']})" + ("  [red]random weights: answer is meaningless[/]"
                                                   if d["random_weights"] else ""))
    add("quantization", d["quantization"])
    add("device", f"{d['device']} ({d['dtype']})")
    add("frames sampled", str(d["frames"]))
    if verbose:
        add("frame times (s)", ", ".join(f"{t:.2f}" for t in d["frame_timestamps"]))
    add("visual tokens", f"{d['visual_tokens_before']:,} -> {d['visual_tokens_after']:,} after TTM "
                         f"({d['visual_tokens_kept_pct']:.1f}% kept)")
    add("KV entries / decode step", f"{d['kv_entries_attended_mean']:,.1f} attended of {d['kv_entries_full']:,}")
    reused = (f" ({d['prefix_reused_tokens']:,} reused from cache, ~{format_seconds(d['prefill_saved_s'])} saved)"
              if d["prefix_reused_tokens"] else "")
    add("prompt tokens", f"{d['prompt_tokens']:,}{reused}")
    add("generated tokens", f"{d['generated_tokens']:,}")
    if d["video_reused"]:
        add("video stages", "reused: decoded, encoded and compressed for an earlier answer")
    else:
        for key, label in [("video_decode_s", "video decode"), ("preprocess_s", "preprocessing"),
                           ("vision_encode_s", "vision encode"), ("ttm_s", "TTM")]:
            add(label, format_seconds(d[key]))
    add("prefill (first token)", format_seconds(d["prefill_s"]))
    add("decode", f"{format_seconds(d['decode_s'])} ({d['decode_tokens_per_s']:.1f} tokens/s)")
    add("total", format_seconds(d["total_s"]))
    if "peak_gpu_allocated_bytes" in d:
        add("peak GPU memory", f"{format_bytes(d['peak_gpu_allocated_bytes'])} allocated, "
                               f"{format_bytes(d['peak_gpu_reserved_bytes'])} reserved")
    else:
        add("peak memory (RSS)", format_bytes(d["peak_rss_bytes"]))
    return table


def print_stats(stats, verbose: bool = False) -> None:
    for warning in stats.video.warnings:
        notice(warning)
    stderr.print(stats_table(stats, verbose))
