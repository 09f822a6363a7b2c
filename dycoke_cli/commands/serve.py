"""`dycoke serve`: keep one model loaded and answer OpenAI chat-completions requests about videos.

Every model flag of `ask` chooses the model; the sampling, compression and generation flags are the
defaults a request's own settings override. What a request may read, send and cost is bounded by the
flags below; everything else is the HTTP layer in dycoke_cli/serve/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dycoke_cli.commands import options as o
from dycoke_cli.commands.common import errors_to_exit

SERVER = "Server"
LIMITS = "Limits"


@o.with_flags(model=o.ModelFlags, sampling=o.SamplingFlags, compress=o.CompressFlags, gen=o.GenerationFlags)
def serve(
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS", envvar="DYCOKE_HOST", rich_help_panel=SERVER,
        help="Address to listen on; anything but loopback needs --api-key or --allow-unauthenticated.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", metavar="PORT", envvar="DYCOKE_PORT", min=0, max=65535, rich_help_panel=SERVER,
        help="TCP port; 0 takes any free one (the address is printed on stderr).")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", metavar="KEY", envvar="DYCOKE_API_KEY", rich_help_panel=SERVER, show_default=False,
        help="Require Authorization: Bearer KEY on every route (prefer the environment variable: "
             "arguments are visible to other users).")] = None,
    allow_unauthenticated: Annotated[bool, typer.Option(
        "--allow-unauthenticated", envvar="DYCOKE_ALLOW_UNAUTHENTICATED", rich_help_panel=SERVER,
        help="Serve a non-loopback --host without an API key.")] = False,
    allowed_media_dir: Annotated[Optional[list[Path]], typer.Option(
        "--allowed-media-dir", metavar="DIR", envvar="DYCOKE_ALLOWED_MEDIA_DIR", rich_help_panel=SERVER,
        show_default=False,
        help="Folder whose videos file:// URLs may name (repeatable); without it, local files are refused.")] = None,
    allow_url_fetch: Annotated[bool, typer.Option(
        "--allow-url-fetch", envvar="DYCOKE_ALLOW_URL_FETCH", rich_help_panel=SERVER,
        help="Fetch http(s):// video URLs (within --fetch-timeout and --max-video-mib).")] = False,
    fetch_timeout: Annotated[float, typer.Option(
        "--fetch-timeout", metavar="S", envvar="DYCOKE_FETCH_TIMEOUT", min=0.1, max=3600, rich_help_panel=LIMITS,
        help="Seconds a video URL may take to fetch.")] = 30.0,
    max_video_mib: Annotated[int, typer.Option(
        "--max-video-mib", metavar="MIB", envvar="DYCOKE_MAX_VIDEO_MIB", min=1, max=4096, rich_help_panel=LIMITS,
        help="Largest video sent in a data: URL or fetched, in MiB; a request body may be 4/3 of it plus "
             "1 MiB.")] = 64,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", metavar="S", envvar="DYCOKE_BODY_TIMEOUT", min=0.1, max=3600, rich_help_panel=LIMITS,
        help="Seconds a request body may take to arrive (408 after).")] = 30.0,
    request_timeout: Annotated[float, typer.Option(
        "--request-timeout", metavar="S", envvar="DYCOKE_REQUEST_TIMEOUT", min=0.1, max=86400,
        rich_help_panel=LIMITS, help="Seconds from a request's arrival to its last token, queueing included "
                                     "(504 after; generation stops).")] = 600.0,
    queue_size: Annotated[int, typer.Option(
        "--queue-size", metavar="N", envvar="DYCOKE_QUEUE_SIZE", min=1, max=10_000, rich_help_panel=LIMITS,
        help="Requests that may wait behind the running one (429 with Retry-After beyond).")] = 16,
    sessions: Annotated[int, typer.Option(
        "--sessions", metavar="N", envvar="DYCOKE_SESSIONS", min=1, max=1000, rich_help_panel=LIMITS,
        help="Encoded videos kept in memory with their KV caches, for repeat questions and conversations.")] = 4,
    verbose: o.Verbose = False, debug: o.Debug = False,
    *, model: o.ModelFlags, sampling: o.SamplingFlags, compress: o.CompressFlags, gen: o.GenerationFlags,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API, one request at a time; settings per request."""
    with errors_to_exit(debug, verbose):
        import shutil
        import tempfile

        from dycoke_cli import render
        from dycoke_cli.serve import server
        from dycoke_cli.serve.app import Limits, create_app
        from dycoke_cli.serve.media import MediaRules
        from dycoke_cli.serve.schema import Defaults

        spec = compress.spec()  # the defaults are checked before anything else happens
        sampling.request()
        server.check_exposure(host, api_key, allow_unauthenticated)
        dirs = _media_dirs(allowed_media_dir or [])
        sock = server.bind(host, port)
        temp = Path(tempfile.mkdtemp(prefix="dycoke-serve-"))  # 0700: the videos clients send
        try:
            video_bytes = max_video_mib << 20
            state = _state(model, spec, verbose, queue_size, sessions, api_key,
                           Defaults(model=model.model, sampling=sampling, compress=compress, gen=gen),
                           Limits(max_body_bytes=video_bytes * 4 // 3 + (1 << 20), body_timeout_s=body_timeout,
                                  request_timeout_s=request_timeout),
                           MediaRules(allowed_dirs=dirs, allow_urls=allow_url_fetch, max_bytes=video_bytes,
                                      fetch_timeout_s=fetch_timeout, temp_dir=temp))
            render.notice(f"serving {model.model} on {server.url_of(sock)} (one request at a time, up to "
                          f"{queue_size} waiting; Ctrl-C or SIGTERM stops)")

            def drain() -> None:  # in the signal handler: hand the work to the event loop
                if state.loop is not None:
                    state.loop.call_soon_threadsafe(state.worker.drain)

            server.run(create_app(state), sock, drain, verbose, graceful_s=request_timeout + 5)
        finally:
            sock.close()
            shutil.rmtree(temp, ignore_errors=True)


def _media_dirs(given: list[Path]) -> tuple[Path, ...]:
    from dycoke_cli.errors import BadInputError

    dirs = []
    for folder in given:
        real = folder.expanduser().resolve()
        if not real.is_dir():
            raise BadInputError(f"--allowed-media-dir {folder}: not a folder")
        dirs.append(real)
    return tuple(dirs)


def _state(model, spec, verbose: bool, queue_size: int, sessions: int, api_key, defaults, limits, rules):
    """Check the default compression against the model, load it, and build what the routes share."""
    from dycoke_cli.commands.common import inspect, load
    from dycoke_cli.plan import check_method
    from dycoke_cli.serve.app import ServerState
    from dycoke_cli.serve.media import Media
    from dycoke_cli.serve.sessions import Sessions
    from dycoke_cli.serve.worker import Worker

    planning = inspect(model)  # the planner thread's own adapter and tokenizer
    check_method(spec.build(), planning.adapter)
    lm = load(inspect(model), model, verbose=verbose)
    o.checked_values({}, sampling=o.SamplingFlags, compress=o.CompressFlags, gen=o.GenerationFlags)  # built once
    return ServerState(defaults=defaults, limits=limits, media=Media(rules), worker=Worker(queue_size),
                       sessions=Sessions(lm, sessions), planning_adapter=planning.adapter, api_key=api_key)
