"""Bearer-token authentication and request-size limits for the service (threat model: SECURITY.md).

Rules
-----
* **What is protected.** When a token is configured, every request whose method is not
  ``GET``/``HEAD``/``OPTIONS`` must carry ``Authorization: Bearer <token>``: today
  ``POST /-/reload``, ``POST /api/v1/write`` (remote_write), ``POST /v1/metrics``
  (OTLP), and any write or admin endpoint added later, without a list to keep up to
  date. With ``auth.protect_reads`` the read endpoints need it too, except the probes
  ``/healthz`` and ``/readyz``. Without a token nothing is checked, which is why a
  listener on a non-loopback address without a token needs ``--insecure``
  (`check_exposure`).
* **Comparison.** The presented token is compared with `hmac.compare_digest` on UTF-8
  bytes (time independent of where the first difference is). A missing or wrong token
  answers ``401`` with ``WWW-Authenticate: Bearer``; the response and the log say
  which (missing / invalid), never what was presented or expected.
* **Where the token comes from** (`load_token`, precedence high to low): the
  environment variable ``CSF_AUTH_TOKEN``, the file named by ``CSF_AUTH_TOKEN_FILE``,
  the file named by ``auth.token_file`` in the config file. A file's content is
  stripped of surrounding whitespace. A token must be 16-4096 printable ASCII
  characters without spaces (it travels in an HTTP header). It is read at start and on
  every reload (so a reload rotates it), and is never logged, never shown by the API
  and never part of an error message.
* **Body limit.** A request body above ``max_body_bytes`` answers ``413`` before the
  endpoint runs: as soon as ``Content-Length`` says so, else while the body is read
  (chunked bodies are buffered up to the limit, never beyond). Unauthenticated
  requests are refused without passing their body on. The ingestion endpoints keep
  their own (lower or equal) limits on top of this one.
* **Refusals a client can read.** Many clients (Python's urllib, remote_write senders)
  write the whole body before they read the answer; a server that answers and closes
  while they write makes them see "connection reset" instead of the 413/401, and a
  remote_write sender retries a reset forever. So before a 401/413 the middleware
  reads and discards the rest of the body, up to `DRAIN_BYTES` in all; a larger body
  is answered with ``Connection: close`` without further reading. A client that sent
  ``Expect: 100-continue`` has not sent its body and is answered at once.

Nothing here imports a web framework: `SecurityMiddleware` is a plain ASGI middleware.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("csf.auth")

TOKEN_ENV = "CSF_AUTH_TOKEN"
TOKEN_FILE_ENV = "CSF_AUTH_TOKEN_FILE"
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 4096
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
"""Never protected, so that orchestrator probes work without the token."""
DRAIN_BYTES = 80 * 1024 * 1024
"""Most bytes of a refused request body read and discarded so the client can read the refusal."""
_LOG_REPEAT_SECONDS = 60.0
_LOG_MEMORY = 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------- configuration


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for anything else."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_exposure(host: str, token_configured: bool, insecure: bool) -> None:
    """Refuse (ValueError) to listen on a non-loopback `host` without a token unless `insecure`."""
    if token_configured or insecure or is_loopback(host):
        return
    raise ValueError(
        f"refusing to listen on non-loopback address {host!r} without an auth token: anyone who can "
        f"reach it could reload the configuration and write samples. Set {TOKEN_ENV} or "
        f"{TOKEN_FILE_ENV} (or auth.token_file in the config file), or pass --insecure to accept the risk"
    )


def validate_token(token: str) -> str:
    """The token if usable in a Bearer header; ValueError (never quoting the token) otherwise."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the auth token is too short ({len(token)} characters, at least {MIN_TOKEN_LENGTH})"
        )
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"the auth token is too long ({len(token)} characters, at most {MAX_TOKEN_LENGTH})")
    if any(not (0x21 <= ord(ch) <= 0x7E) for ch in token):
        raise ValueError("the auth token must be printable ASCII without spaces or control characters")
    return token


@dataclass(frozen=True)
class TokenSource:
    """A loaded token and where it came from (the origin is safe to log; the token is not)."""

    token: str
    origin: str

    def __repr__(self) -> str:
        return f"TokenSource(origin={self.origin!r}, token=<redacted>)"


def read_token_file(path: str | Path, origin: str) -> TokenSource:
    """The stripped content of a token file; ValueError naming `origin` and the path, never the content."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{origin}: token file {p} not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{origin}: token file {p} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(
            f"{origin}: cannot read token file {p}: {exc.strerror or type(exc).__name__}"
        ) from None
    token = text.strip()
    if not token:
        raise ValueError(f"{origin}: token file {p} is empty")
    try:
        validate_token(token)
    except ValueError as exc:
        raise ValueError(f"{origin}: token file {p}: {exc}") from None
    return TokenSource(token, f"file {p}")


def load_token(
    env: Mapping[str, str], file_token_path: str | None = None, file_origin: str = "auth.token_file"
) -> TokenSource | None:
    """The configured token: ``CSF_AUTH_TOKEN`` > ``CSF_AUTH_TOKEN_FILE`` > `file_token_path`.

    None when none is configured. ValueError (message without the token) when the chosen
    one is unusable. An empty environment variable is an error, not "unset".
    """
    if TOKEN_ENV in env:
        token = env[TOKEN_ENV].strip()
        if not token:
            raise ValueError(f"environment variable {TOKEN_ENV} is empty")
        try:
            validate_token(token)
        except ValueError as exc:
            raise ValueError(f"environment variable {TOKEN_ENV}: {exc}") from None
        return TokenSource(token, f"environment variable {TOKEN_ENV}")
    if TOKEN_FILE_ENV in env:
        path = env[TOKEN_FILE_ENV].strip()
        if not path:
            raise ValueError(f"environment variable {TOKEN_FILE_ENV} is empty")
        return read_token_file(path, f"environment variable {TOKEN_FILE_ENV}")
    if file_token_path is not None:
        return read_token_file(file_token_path, file_origin)
    return None


# --------------------------------------------------------------------------- request checks


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip()
    return credentials or None


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of the presented token with the expected one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def needs_auth(method: str, path: str, protect_reads: bool) -> bool:
    """Whether a request must authenticate when a token is configured."""
    if path in PROBE_PATHS:
        return False
    return method.upper() not in SAFE_METHODS or protect_reads


@dataclass(frozen=True)
class SecurityPolicy:
    """What the middleware enforces right now (swapped as a whole on reload)."""

    token: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    protect_reads: bool = False

    def __repr__(self) -> str:
        token = "<redacted>" if self.token is not None else "None"
        return (
            f"SecurityPolicy(token={token}, max_body_bytes={self.max_body_bytes}, "
            f"protect_reads={self.protect_reads})"
        )


Denied = Callable[[str], None]
"""Called with the reason (``unauthorized`` or ``too_large``) of each refused request."""


class _TooLarge(Exception):
    def __init__(self, read: int) -> None:
        super().__init__(read)
        self.read = read


class SecurityMiddleware:
    """ASGI middleware enforcing the `SecurityPolicy` returned by `policy()` on every HTTP request."""

    def __init__(
        self, app: ASGIApp, *, policy: Callable[[], SecurityPolicy], on_denied: Denied | None = None
    ) -> None:
        self.app = app
        self.policy = policy
        self.on_denied = on_denied
        self._logged: dict[tuple[str, str], float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy()
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", ""))
        headers = _headers(scope)

        if policy.token is not None and needs_auth(method, path, policy.protect_reads):
            presented = bearer_token(headers.get("authorization"))
            if not token_matches(presented, policy.token):
                what = "missing" if presented is None else "invalid"
                self._denied(scope, "unauthorized", f"{what} bearer token")
                drained = await _drain_body(receive, headers)
                await _respond(
                    send,
                    401,
                    f"{what} bearer token: this endpoint requires 'Authorization: Bearer <token>'",
                    {
                        "www-authenticate": 'Bearer realm="csf"'
                        + ("" if what == "missing" else ', error="invalid_token"'),
                        **({} if drained else {"connection": "close"}),
                    },
                )
                return

        limit = policy.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _respond(send, 400, "invalid Content-Length header")
                return
            if size > limit:
                self._denied(scope, "too_large", f"declared body of {size} bytes")
                drained = await _drain_body(receive, headers)
                await _respond(
                    send,
                    413,
                    f"request body of {size} bytes exceeds the limit of {limit} bytes",
                    None if drained else {"connection": "close"},
                )
                return
            await self.app(scope, receive, send)  # the server delivers at most Content-Length bytes
            return
        if method in SAFE_METHODS and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        try:
            body_messages = await _buffer(receive, limit)
        except _TooLarge as exc:
            self._denied(scope, "too_large", "streamed body")
            drained = await _drain_body(receive, headers, already=exc.read)
            await _respond(
                send,
                413,
                f"request body exceeds the limit of {limit} bytes",
                None if drained else {"connection": "close"},
            )
            return
        await self.app(scope, _replay(body_messages, receive), send)

    def _denied(self, scope: Scope, reason: str, detail: str) -> None:
        if self.on_denied is not None:
            try:
                self.on_denied(reason)
            except Exception:  # an observer must not break request handling
                log.exception("on_denied callback failed")
        client = scope.get("client")
        host = str(client[0]) if client else "-"
        key = (reason, host)
        now = time.monotonic()
        last = self._logged.get(key)
        first = last is None or now - last >= _LOG_REPEAT_SECONDS
        if first:
            if len(self._logged) >= _LOG_MEMORY:
                self._logged.clear()
            self._logged[key] = now
        # Once per client and reason per minute at warning level; repeats at debug level.
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "request denied",
            extra={
                "reason": reason,
                "detail": detail,
                "method": scope.get("method", ""),
                "path": scope.get("path", ""),
                "client": host,
            },
        )


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        out.setdefault(name, raw_value.decode("latin-1"))
    return out


async def _buffer(receive: Receive, limit: int) -> list[Message]:
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message.get("type") != "http.request":
            return messages
        size += len(message.get("body", b""))
        if size > limit:
            if not message.get("more_body", False):
                raise _TooLarge(-1)  # the whole body is read already
            raise _TooLarge(size)
        if not message.get("more_body", False):
            return messages


async def _drain_body(receive: Receive, headers: Mapping[str, str], already: int = 0) -> bool:
    """Read and discard the rest of the request body, up to `DRAIN_BYTES` in all.

    True when the whole body was read (the connection may stay open), False when the
    client waits for ``100 Continue`` or the body is larger than the bound.
    `already` (-1: the body is complete) counts bytes read before the call.
    """
    if already < 0:
        return True
    if "100-continue" in headers.get("expect", "").lower():
        return False
    declared = headers.get("content-length")
    if declared is not None and declared.strip().isdigit():
        if int(declared) > DRAIN_BYTES:
            return False
        if int(declared) == 0:
            return True
    elif "transfer-encoding" not in headers:
        return True  # no body
    size = already
    while size <= DRAIN_BYTES:
        message = await receive()
        if message.get("type") != "http.request":
            return False  # the client went away
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return size <= DRAIN_BYTES
    return False


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _respond(
    send: Send, status: int, message: str, extra_headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "MAX_TOKEN_LENGTH",
    "MIN_TOKEN_LENGTH",
    "PROBE_PATHS",
    "SAFE_METHODS",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "SecurityMiddleware",
    "SecurityPolicy",
    "TokenSource",
    "bearer_token",
    "check_exposure",
    "is_loopback",
    "load_token",
    "needs_auth",
    "read_token_file",
    "token_matches",
    "validate_token",
]
