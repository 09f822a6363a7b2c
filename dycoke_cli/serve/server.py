"""uvicorn on a socket this module binds, the guard on open addresses, and a clean SIGTERM.

The socket is bound before the model loads, so a port in use fails in a second, not after a minute
of loading, and `--port 0` (any free port) can be announced with the port it got. SIGTERM stops
taking connections, answers the queued requests 503, lets the running one finish, and exits 0.
"""

from __future__ import annotations

import ipaddress
import signal
import socket

from dycoke_cli.errors import BadInputError


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is this machine's loopback (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    """Refuse to serve a reachable address without a key unless the user says so explicitly."""
    if api_key is None and not allow_unauthenticated and not is_loopback(host):
        raise BadInputError(f"--host {host} is reachable from other machines, and anyone who reaches it could use "
                            "the model and read the allowed media; set --api-key (or DYCOKE_API_KEY), or pass "
                            "--allow-unauthenticated")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 takes any free one."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise BadInputError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BadInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(app, sock: socket.socket, on_signal, verbose: bool, graceful_s: float) -> None:
    """Serve `app` on `sock` until SIGTERM or Ctrl-C; `on_signal()` runs first (it drains the queue)."""
    import uvicorn

    class Draining(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            on_signal()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="info" if verbose else "warning", access_log=verbose,
                            timeout_graceful_shutdown=graceful_s, lifespan="on")
    # uvicorn raises a signal it stopped for again once it is done, under the handler that was there
    # before it started: with this one, SIGTERM then ends the process normally (exit 0).
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        Draining(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
