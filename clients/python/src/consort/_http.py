"""Finding the daemon and talking to it: plain HTTP requests (standard library), streamed
server-sent events, and WebSocket sessions (``websocket-client``).

The daemon is found as the ``consort`` CLI finds it: an explicit URL or data dir (whose
``ports.json`` names the API port), else ``CONSORT_API``, else the ``ports.json`` of the default
data dir, else ``http://127.0.0.1:7471``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import quote, urlsplit

import websocket

from .errors import ApiError, ConsortError, DaemonUnreachable, error_for

#: The API address ``consort up`` uses by default.
DEFAULT_API = "http://127.0.0.1:7471"

#: How long a plain request may take unless said otherwise, in seconds (more than a write
#: forwarded to its owner may wait for it).
DEFAULT_TIMEOUT = 10.0

_NO_BODY = object()

PathLike = Union[str, "os.PathLike[str]"]


def normalize_url(url: str) -> str:
    """``http://host:port`` from ``http://host:port[/]`` or ``host:port``; other schemes are
    refused, as the CLI refuses them."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        return f"http://{url}"
    scheme, rest = url.split("://", 1)
    if scheme != "http" or not rest:
        raise ValueError(f"API URL {url!r} is not supported; use http://HOST:PORT")
    return url


def default_data_dir() -> Optional[Path]:
    """``$CONSORT_DATA_DIR``, else ``$XDG_DATA_HOME/consort``, else
    ``~/.local/share/consort`` (where ``consort up`` keeps its data by default)."""
    for var, tail in (("CONSORT_DATA_DIR", ""), ("XDG_DATA_HOME", "consort")):
        value = os.environ.get(var)
        if value:
            return Path(value) / tail if tail else Path(value)
    home = os.environ.get("HOME")
    return Path(home) / ".local/share/consort" if home else None


def url_from_data_dir(data_dir: PathLike) -> str:
    """The API URL the daemon running on ``data_dir`` recorded in its ``ports.json``."""
    path = Path(data_dir) / "ports.json"
    try:
        ports = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DaemonUnreachable(
            f"no daemon recorded in {data_dir} (is 'consort up --data-dir {data_dir}' "
            f"running?): {e}"
        ) from e
    api = ports.get("api") if isinstance(ports, dict) else None
    if not isinstance(api, int):
        raise DaemonUnreachable(f"no API port recorded in {path}")
    return f"http://127.0.0.1:{api}"


def locate(api: Optional[str] = None, data_dir: Optional[PathLike] = None) -> str:
    """The base URL of the daemon to use (see the module docs for the order)."""
    if api and api.strip():
        return normalize_url(api)
    if data_dir is not None:
        return url_from_data_dir(data_dir)
    env = os.environ.get("CONSORT_API", "")
    if env.strip():
        return normalize_url(env)
    default = default_data_dir()
    if default is not None:
        try:
            return url_from_data_dir(default)
        except DaemonUnreachable:
            pass
    return DEFAULT_API


def key_path(route: str, key: str) -> str:
    """``route`` followed by ``key``, percent-encoded except for its slashes."""
    return route + quote(key, safe="/")


class Transport:
    """One daemon's API: where it is, the token, and how long requests may take."""

    def __init__(self, base_url: str, token: Optional[str], timeout: float) -> None:
        parts = urlsplit(base_url)
        if not parts.hostname:
            raise ValueError(f"API URL {base_url!r} names no host")
        self.base_url = base_url
        self.host: str = parts.hostname
        self.port: int = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _headers(self) -> Dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _unreachable(self, error: BaseException) -> DaemonUnreachable:
        return DaemonUnreachable(f"cannot reach the consort daemon at {self.base_url}: {error}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        timeout: Optional[float] = None,
    ) -> Any:
        """``METHOD path`` with an optional JSON body; the parsed JSON of a 2xx answer, or
        the :class:`ApiError` the daemon's error answer stands for."""
        headers = self._headers()
        data: Optional[bytes] = None
        if body is not _NO_BODY:
            data = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from e
        finally:
            conn.close()
        return _answer(response.status, raw)

    def open_stream(
        self, path: str
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """``GET path`` for a stream of server-sent events: returns once the daemon has
        answered the head (so the subscription exists), with the body left to read."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = self._headers()
        headers["Accept"] = "text/event-stream"
        try:
            conn.request("GET", self.prefix + path, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._unreachable(e) from e
        if response.status != 200:
            raw = response.read()
            conn.close()
            _answer(response.status, raw)
            raise ConsortError(f"unexpected answer {response.status} to GET {path}")
        if conn.sock is not None:
            conn.sock.settimeout(None)  # events come when they come; close() ends the wait
        return conn, response

    def websocket(self) -> websocket.WebSocket:
        """A WebSocket session on ``/v1/ws``; its reads block until a frame comes."""
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        url = f"ws://{netloc}:{self.port}{self.prefix}/v1/ws"
        header = [f"Authorization: Bearer {self.token}"] if self.token else []
        try:
            ws = websocket.create_connection(
                url, timeout=self.timeout, header=header, enable_multithread=True
            )
        except websocket.WebSocketBadStatusException as e:
            status = int(getattr(e, "status_code", 0) or 0)
            raw = getattr(e, "resp_body", None) or b""
            if isinstance(raw, str):
                raw = raw.encode()
            raise _error_of(status, raw) from e
        except (OSError, websocket.WebSocketException) as e:
            raise self._unreachable(e) from e
        ws.settimeout(None)
        return ws


def _error_of(status: int, raw: bytes) -> ApiError:
    try:
        message = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        message = None
    if not isinstance(message, str):
        message = raw.decode("utf-8", "replace").strip() or http.client.responses.get(
            status, "error"
        )
    return error_for(status, message)


def _answer(status: int, raw: bytes) -> Any:
    if 200 <= status < 300:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ConsortError(f"the daemon's answer is not JSON: {raw[:200]!r}") from e
    raise _error_of(status, raw)


def shutdown(sock: Optional[socket.socket]) -> None:
    """Wakes a thread blocked reading ``sock`` (it sees the end of the stream)."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Backoff:
    """The waits between attempts to reach a daemon that went away: short at first (a restart
    takes a fraction of a second), then longer, up to a second."""

    FIRST = 0.1
    LAST = 1.0

    def __init__(self) -> None:
        self.delay = self.FIRST

    def reset(self) -> None:
        """The daemon answered: the next loss starts over with short waits."""
        self.delay = self.FIRST

    def wait(self, stop: threading.Event) -> bool:
        """Waits before the next attempt; true if ``stop`` was set meanwhile."""
        stopped = stop.wait(self.delay)
        self.delay = min(self.delay * 2, self.LAST)
        return stopped
