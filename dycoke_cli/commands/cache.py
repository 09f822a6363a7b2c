"""`dycoke cache`: what the video cache holds, and removing it.

`dycoke cache` (or `cache list`) lists the entries, most recently used first: key, video, model,
frames, size, last use. `rm` removes the entries of a video (every model and setting) or of a key
prefix, `clear` all of them; `--older-than AGE` keeps those used more recently. Nothing here imports
torch, so it answers at once.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit
from dycoke_cli.commands.help import Panels

app = typer.Typer(name="cache", no_args_is_help=False, rich_markup_mode=None,
                  help="List the video cache's entries (encoded videos); remove some or all.")

KEY_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")
OlderThan = Annotated[Optional[str], typer.Option(
    "--older-than", metavar="AGE", help="Only entries not used for AGE (e.g. 12h, 7d, 2w).")]


def _listing(entries: list, now: float) -> list[dict]:
    """Plain rows of cache.folder.Entry: what the table and --json show."""
    rows = []
    for entry in entries:
        label = (entry.info or {}).get("label", {})
        rows.append({"key": entry.key, "video": label.get("video"), "model": label.get("model"),
                     "frames": label.get("frames"), "dtype": label.get("dtype"), "device": label.get("device"),
                     "bytes": entry.bytes, "last_used": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(entry.last_used)),
                     "idle_s": round(now - entry.last_used, 1), "problem": entry.problem})
    return rows


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def print_listing(folder: Path, rows: list[dict]) -> None:
    from dycoke_cli import render

    total = sum(r["bytes"] for r in rows)
    render.write_text(f"Video cache in {folder}: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, "
                      f"{render.format_bytes(total)}\n")
    for r in rows:
        what = (f"{r['model']}, {r['frames']} frames, {r['dtype']} {r['device']}" if r["problem"] is None
                else f"unusable: {r['problem']}")
        render.write_text(f"  {r['key'][:12]}  {render.format_bytes(r['bytes']):>9}  {_ago(r['idle_s']):>12}  "
                          f"{r['video'] or '?'}\n    {what}\n")


@app.callback(invoke_without_command=True)
def cache(ctx: typer.Context, json_out: o.Listing = False, debug: o.Debug = False) -> None:
    """List the encoded videos in the cache, most recently used first."""
    if ctx.invoked_subcommand is None:
        list_entries(json_out, debug)


@app.command("list", cls=Panels)
def list_entries(json_out: o.Listing = False, debug: o.Debug = False) -> None:
    """List the encoded videos in the cache, most recently used first."""
    with errors_to_exit(debug):
        from dycoke_cli import render
        from dycoke_cli.cache.folder import cache_folder, entries

        folder = cache_folder()
        rows = _listing(entries(folder, read=True), time.time())
        if json_out:
            render.print_json({"folder": str(folder), "bytes": sum(r["bytes"] for r in rows), "entries": rows})
        else:
            print_listing(folder, rows)


def _older(chosen: list, older_than: str | None) -> list:
    from dycoke_cli.cache.units import parse_age

    if older_than is None:
        return chosen
    limit = time.time() - parse_age(older_than)
    return [e for e in chosen if e.last_used < limit]


def _remove(chosen: list) -> None:
    from dycoke_cli import render
    from dycoke_cli.cache.folder import remove
    from dycoke_cli.errors import RuntimeFailure

    count, size, failed = remove(chosen)
    render.notice(f"removed {count} entr{'y' if count == 1 else 'ies'} ({render.format_bytes(size)})")
    if failed:
        raise RuntimeFailure(f"{len(failed)} entr{'y' if len(failed) == 1 else 'ies'} could not be removed: {failed[0]}")


@app.command(cls=Panels)
def rm(
    targets: Annotated[list[str], typer.Argument(
        metavar="VIDEO|KEY...", help="A video file (its entries for every model and setting) or a key prefix "
                                     "(6 or more hex digits, as listed).", show_default=False)],
    older_than: OlderThan = None, debug: o.Debug = False,
) -> None:
    """Remove the entries of videos or keys."""
    with errors_to_exit(debug):
        from dycoke_cli.cache.folder import cache_folder, entries
        from dycoke_cli.errors import BadInputError

        listed = entries(cache_folder(), read=True)
        chosen = {}
        for target in targets:
            if Path(target).exists():
                video = str(Path(target).resolve())
                matched = [e for e in listed if (e.info or {}).get("label", {}).get("video") == video]
            elif KEY_PREFIX.match(target):
                matched = [e for e in listed if e.key.startswith(target)]
            else:
                raise BadInputError(f"'{target}' is neither a file nor a key prefix (6 or more hex digits); "
                                    "dycoke cache lists the entries")
            if not matched:
                raise BadInputError(f"no cache entry matches '{target}' (dycoke cache lists them)")
            chosen.update({e.path: e for e in matched})
        _remove(_older(list(chosen.values()), older_than))


@app.command(cls=Panels)
def clear(older_than: OlderThan = None, debug: o.Debug = False) -> None:
    """Remove every entry (with --older-than, those not used for that long)."""
    with errors_to_exit(debug):
        from dycoke_cli.cache.folder import cache_folder, entries

        _remove(_older(entries(cache_folder()), older_than))
