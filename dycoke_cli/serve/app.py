"""The routes of the OpenAI-compatible server (Starlette), and what each request goes through.

  POST /v1/chat/completions   API key -> body (size cap by Content-Length, then by counting; a time
                              limit to arrive) -> schema -> media -> plan (planner thread) -> queue ->
                              the model thread -> one JSON completion, or server-sent events
  GET  /v1/models             the one model served
  GET  /health                queue, counters (answered, cancelled, timed out, failed, rejected)

Every failure is OpenAI's JSON error with its status (api_errors.py); a client that goes away while
its request waits or streams cancels it, and its generation stops at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dycoke_cli.errors import DycokeError
from dycoke_cli.serve.api_errors import ApiError, api_error
from dycoke_cli.serve.media import Media
from dycoke_cli.serve.responses import DONE, Completion, sse
from dycoke_cli.serve.schema import Defaults, chat_request, parse_json
from dycoke_cli.serve.sessions import Sessions
from dycoke_cli.serve.worker import Job, Worker

GRACE_S = 5.0  # past a job's time limit, the event loop answers 504 itself (the model thread may be encoding)


@dataclass
class Limits:
    max_body_bytes: int
    body_timeout_s: float
    request_timeout_s: float


@dataclass
class ServerState:
    """Everything the routes share; built by the serve command once the model is loaded."""

    defaults: Defaults
    limits: Limits
    media: Media
    worker: Worker
    sessions: Sessions
    planning_adapter: object  # a second adapter (its own tokenizer) for the planner thread
    api_key: str | None = None
    started: int = field(default_factory=lambda: int(time.time()))
    planner: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "dycoke-plan"))
    loop: asyncio.AbstractEventLoop | None = None


def create_app(state: ServerState) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            state.worker.stop()
            state.planner.shutdown(wait=False)

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/models", models, methods=["GET"]), Route("/health", health, methods=["GET"])]
    handlers = {ApiError: _error_response, DycokeError: _error_response, HTTPException: _http_error,
                Exception: _error_response}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan,
                    middleware=[Middleware(ApiKey, key=state.api_key)])
    app.state.server = state
    return app


class ApiKey:
    """`Authorization: Bearer KEY` on every route (when the server has a key), checked in constant time
    before anything else, so an unauthenticated body is never read."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.key is not None:
            given = Headers(scope=scope).get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.key}".encode()):
                error = ApiError(401, "a valid API key is needed: Authorization: Bearer KEY", "invalid_api_key",
                                 {"WWW-Authenticate": "Bearer"})
                return await _error_response(None, error)(scope, receive, send)
        await self.app(scope, receive, send)


async def models(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.server
    return JSONResponse({"object": "list", "data": [
        {"id": state.defaults.model, "object": "model", "created": state.started, "owned_by": "dycoke"}]})


async def health(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.server
    queue = state.worker.health()
    return JSONResponse({"status": "draining" if queue["draining"] else "ok", "model": state.defaults.model,
                         "queue": queue, "sessions": len(state.sessions), "temporary_videos": state.media.held})


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    loop = asyncio.get_running_loop()
    try:
        body = await read_body(request, state.limits)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read it
    accepted = time.monotonic()
    chat = chat_request(parse_json(body), state.defaults)
    del body
    if chat.video_url[:5].lower() == "file:":  # a few stat calls: no thread hop
        video = state.media.open(chat.video_url)
    else:  # base64 decoding or a download: off the event loop
        video = await loop.run_in_executor(None, state.media.open, chat.video_url)
    chat = replace(chat, video_url=video.label)  # a data: URL's text is not kept while the request waits
    try:
        plan = await loop.run_in_executor(state.planner, _plan, state, chat, video)
        job = Job(work=lambda job: state.sessions.answer(job, chat, video, plan), loop=loop, stream=chat.stream,
                  deadline=accepted + state.limits.request_timeout_s, timeout_s=state.limits.request_timeout_s,
                  release=video.release)
        state.worker.submit(job)
    except BaseException:
        video.release()
        raise
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        first = await _next_event(job, gone)
        if first is None:
            return Response(status_code=400)
        kind, value = first
        if kind == "error":
            raise value
        completion = Completion(chat.model)
        if not chat.stream:  # only a streamed job emits text: this is its end
            return JSONResponse(completion.whole(value))
    finally:
        gone.cancel()
    return StreamingResponse(_events(job, first, completion, chat.include_usage), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _plan(state: ServerState, chat, video):
    from dycoke_cli.serve.planning import plan_request

    return plan_request(state.planning_adapter, chat, video)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, refused with 413 past `max_body_bytes` (by its Content-Length before anything is
    read, else by counting) and with 408 if it has not all arrived within `body_timeout_s`."""
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise ApiError(400, "the Content-Length header is not a number", "invalid_header")
    too_big = ApiError(413, f"the request body is over this server's {limits.max_body_bytes:,} bytes "
                            "(a video of --max-video-mib, base64-encoded, and the rest)", "body_too_large")
    if length is not None and int(length) > limits.max_body_bytes:
        raise too_big

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s (--body-timeout)",
                       "body_timeout") from None


async def _disconnected(receive) -> None:
    """Returns when the client goes away (the body has been read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _next_event(job: Job, gone: asyncio.Future):
    """The job's next event; None (and the job cancelled) if the client went away first. Past the
    job's time limit (and a grace) the job is cancelled and a 504 comes back, whatever it is doing."""
    getter = asyncio.ensure_future(job.events.get())
    wait = max(0.0, job.deadline - time.monotonic()) + GRACE_S
    done, _ = await asyncio.wait({getter, gone}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    if gone in done:
        job.cancel()
        return None
    return "error", job.timeout_error()  # the model thread stops it (and counts it) on its own clock


async def _events(job: Job, first, completion: Completion, include_usage: bool):
    """The server-sent events of a streamed answer; leaving early (the client went away) cancels it."""
    try:
        yield sse(completion.chunk({"role": "assistant", "content": ""}))
        kind, value = first
        while kind == "text":
            yield sse(completion.chunk({"content": value}))
            kind, value = await job.events.get()
        if kind == "error":
            yield sse(value.body())
        else:
            yield sse(completion.chunk({}, value.finish_reason, value.stats))
            if include_usage:
                yield sse(completion.usage_chunk(value.stats))
        yield DONE
    finally:
        job.cancel()


def _error_response(request, exc: Exception) -> JSONResponse:
    error = api_error(exc)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _http_error(request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) in the same JSON shape."""
    message = {404: f"no route {request.url.path}; routes: POST /v1/chat/completions, GET /v1/models, GET /health",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return _error_response(request, ApiError(exc.status_code, message, "not_found" if exc.status_code == 404 else None,
                                             dict(exc.headers or {})))
