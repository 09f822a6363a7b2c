"""Calls to the Hugging Face Hub, each with a connect and read timeout and a total deadline.

huggingface-hub's shared HTTP client has no timeout of its own (only its HEAD and file requests pass
one), so against an endpoint that accepts connections and never answers, listing a repository waits
forever, whatever HF_HUB_ETAG_TIMEOUT says. Hence:

- `configure()` gives every request of that client (through `set_client_factory`, huggingface-hub's
  public hook, and an httpx request hook) a connect, read, write and pool timeout of
  DYCOKE_HUB_TIMEOUT seconds: a transfer that stalls that long fails instead of hanging;
- `ask_hub()` asks the Hub about the repository before anything is downloaded, in a worker thread
  that the caller stops waiting for after the same number of seconds, whatever the server does
  (trickling bytes, retries): a Hub that does not answer is known in bounded time, and the caller can
  fall back to the local cache or say how to work offline.

A server that answers that question and then stalls meets the per-request timeouts; huggingface-hub
retries a timed-out request five times with backoff, so such a download gives up after about
6 x DYCOKE_HUB_TIMEOUT + 23 s (83 s by default).
"""

from __future__ import annotations

import math
import os
import threading

from dycoke_cli.errors import BadInputError

TIMEOUT_ENV = "DYCOKE_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0  # huggingface-hub's own default for its file requests


def timeout_s() -> float:
    """DYCOKE_HUB_TIMEOUT in seconds (default 10), checked."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= 3600):
        raise BadInputError(f"{TIMEOUT_ENV}={text!r}: expected seconds, more than 0 and at most 3600")
    return value


_configured: list[float] = []


def configure(timeout: float) -> None:
    """Give every request of huggingface-hub's shared HTTP client connect/read/write/pool timeouts of
    `timeout` s. huggingface-hub passes `timeout=None` (no timeout at all) on most API calls, which
    overrides a client's default, so a request hook fills in each timeout the request leaves unset
    (the `timeout` request extension the transport reads)."""
    if _configured == [timeout]:
        return
    from huggingface_hub import get_session, set_client_factory

    def bound(request) -> None:
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            key: timeout if given.get(key) is None else given[key] for key in ("connect", "read", "write", "pool")}

    session = get_session()  # the client huggingface-hub made: keep its hooks (offline mode, request ids)
    client_class, hooks = type(session), session.event_hooks
    set_client_factory(lambda: client_class(
        event_hooks={**hooks, "request": [*hooks.get("request", []), bound]}, follow_redirects=True,
        timeout=(timeout, timeout, timeout, timeout)))
    _configured[:] = [timeout]


class NoAnswer(Exception):
    """The Hub did not answer within the deadline (or could not be reached at all)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def ask_hub(repo_id: str, timeout: float) -> None:
    """Ask the Hub about `repo_id` within `timeout` seconds in all. Returns once it answered anything
    (an error status included: the download reports those); NoAnswer when it did not answer in time or
    could not be reached."""
    from huggingface_hub import HfApi

    outcome: dict = {}

    def call() -> None:
        try:
            HfApi().model_info(repo_id, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc
        outcome["done"] = True

    worker = threading.Thread(target=call, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if "done" not in outcome:
        raise NoAnswer(f"did not answer within {timeout:g} s")
    error = outcome.get("error")
    if error is not None and _is_network_failure(error):
        raise NoAnswer(_describe(error, timeout))


def _is_network_failure(exc: BaseException) -> bool:
    """A failure to reach or hear from the server (as opposed to an answer that says no)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TimeoutException", "NetworkError", "TransportError", "ConnectionError", "TimeoutError",
                         "OSError"})


def _describe(exc: BaseException, timeout: float) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"TimeoutException", "TimeoutError"}:
        return f"did not answer within {timeout:g} s"
    return "could not be reached"
