"""Run an ASGI app under uvicorn: in the foreground (CLI) or in a thread (``keydesk run``, tests).

Plain HTTP is refused except on a loopback address: a town's staff console or a guarantor's
look-up service carries keys and personal data, so off loopback it must speak TLS (certificate and
key from files). Behind a reverse proxy that terminates TLS, the app still binds loopback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from foundation.errors import ConfigProblem, OperationalError
from foundation.net import is_loopback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listen:
    """Where and how a web service listens. ``what`` names the config table in messages."""

    host: str
    port: int
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    what: str = "web"

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def check(self) -> None:
        """Raise ConfigProblem (one line) for a listen address keydesk must not use."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigProblem(f"{self.what}: tls_cert_file and tls_key_file go together: set both or neither")
        if not self.tls and not is_loopback(self.host):
            raise ConfigProblem(
                f"{self.what}: plain HTTP is allowed only on a loopback address (127.0.0.1, ::1, localhost), "
                f"not {self.host}: set tls_cert_file and tls_key_file, or bind 127.0.0.1 behind a TLS proxy"
            )
        for path in (self.tls_cert_file, self.tls_key_file):
            if path is not None and not Path(path).is_file():
                raise ConfigProblem(f"{self.what}: {path} does not exist")


def _config(app: Any, listen: Listen, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=listen.host,
        port=port,
        ssl_certfile=str(listen.tls_cert_file) if listen.tls_cert_file else None,
        ssl_keyfile=str(listen.tls_key_file) if listen.tls_key_file else None,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # a trusted proxy is configured per app, never implied
        lifespan="off",
    )


def serve_forever(app: Any, listen: Listen) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (uvicorn installs the handlers)."""
    listen.check()
    server = uvicorn.Server(_config(app, listen, listen.port))
    try:
        server.run()
    except OSError as exc:  # pragma: no cover - depends on the host
        raise OperationalError(
            f"{listen.what}: cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}"
        ) from exc
    if not server.started:
        raise OperationalError(f"{listen.what}: could not listen on {listen.host}:{listen.port} (is the port in use?)")


class ServedApp:
    """An app served from a background thread; ``port=0`` picks a free port.

    Used by ``keydesk run`` (console, guarantor service beside the daemon) and by tests, which get
    a real server on a real socket. ``start()`` returns once the socket accepts connections.
    """

    def __init__(self, app: Any, listen: Listen, start_timeout: float = 15.0) -> None:
        listen.check()
        self.listen = listen
        self._start_timeout = start_timeout
        self._sock = socket.socket(socket.AF_INET6 if ":" in listen.host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((listen.host.strip("[]"), listen.port))
        except OSError as exc:
            self._sock.close()
            raise OperationalError(
                f"{listen.what}: cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}"
            ) from exc
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_config(app, listen, self.port))
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, name=f"{listen.what}-http", daemon=True)

    @property
    def url(self) -> str:
        host = self.listen.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.listen.scheme}://{host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise OperationalError(f"{self.listen.what}: the web server stopped while starting")
            if time.monotonic() > deadline:
                raise OperationalError(
                    f"{self.listen.what}: the web server did not start within {self._start_timeout:.0f} s"
                )
            time.sleep(0.01)  # waiting on another thread's flag, bounded by the deadline above
        log.info("%s listening on %s", self.listen.what, self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> ServedApp:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
