"""Request guards: JSON errors, origin check, API token, CORS.

* Every failure leaves as JSON ``{"error": {"type", "message", "details", "extra_info"}}`` with the
  right status; an unexpected exception is a 500, logged, and the server keeps serving.
* On a loopback listener a state-changing request (or a websocket) whose ``Origin`` names another host
  than ``Host`` is refused with 403: a web page elsewhere must not drive the local server. Requests
  without ``Origin`` (scripts, curl) pass. ``--enable-cors-header`` turns the check off and answers CORS.
* With an API token every route, the websocket and the editor need it: ``Authorization: Bearer``,
  ``?token=`` or the ``plexus_token`` cookie. Opening ``/?token=T`` once sets the cookie, so the editor
  (and its websocket) carry it from then on without knowing about it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from storage.errors import StorageError

log = logging.getLogger("plexus.web")

TOKEN_COOKIE = "plexus_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(type_: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "details": details, "extra_info": extra}}


def json_error(status: int, type_: str, message: str, details: str = "", **extra: Any) -> web.Response:
    return web.json_response(error_body(type_, message, details, **extra), status=status)


class BadRequest(Exception):
    """Raised by handlers for malformed input; becomes a 400 JSON answer."""

    def __init__(self, message: str, details: str = "", type_: str = "bad_request", status: int = 400):
        super().__init__(message)
        self.message, self.details, self.type, self.status = message, details, type_, status


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str) -> Any:
    """Strict JSON: NaN / Infinity are refused (Python's json accepts them by default); absurdly deep
    nesting is a ValueError, not a RecursionError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


async def read_json(request: web.Request, *, allow_empty: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        return parse_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("The request body is not valid JSON.", str(exc), "invalid_json") from exc


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    data = await read_json(request, allow_empty=allow_empty)
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", f"got {type(data).__name__}")
    return data


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_matches_host(origin: str, host_header: str) -> bool:
    parts = urlsplit(origin)
    if not parts.hostname:
        return False
    default_port = 443 if parts.scheme in ("https", "wss") else 80
    origin_netloc = f"{parts.hostname}:{parts.port or default_port}"
    host = urlsplit("//" + host_header)
    host_netloc = f"{host.hostname}:{host.port or default_port}" if host.hostname else ""
    return origin_netloc.lower() == host_netloc.lower()


def make_middlewares(*, cors_origin: str | None, api_token: str | None) -> list:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return json_error(exc.status, exc.type, exc.message, exc.details)
        except StorageError as exc:  # UnsafePathError: a name that leaves its folder
            return web.json_response(
                {"error": exc.to_json()}, status=403 if exc.type == "unsafe_path" else 400
            )
        except web.HTTPRequestEntityTooLarge as exc:
            return json_error(413, "request_too_large", "The request body is too large.", exc.text or "")
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            return json_error(
                exc.status,
                exc.reason.lower().replace(" ", "_"),
                exc.reason,
                (exc.text or "") if exc.text and not exc.text.startswith(str(exc.status)) else "",
            )
        except ConnectionResetError:
            raise
        except Exception as exc:  # noqa: BLE001 - the server must outlive any single request
            log.exception("request %s %s failed", request.method, request.path)
            return json_error(
                500,
                "server_error",
                "The server failed to answer this request.",
                f"{type(exc).__name__}: {exc}",
            )

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response()
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = cors_origin or "*"
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, DELETE, PUT, PATCH, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, Comfy-User"
        response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    @web.middleware
    async def origin_check(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method not in SAFE_METHODS or is_ws:
            origin = request.headers.get("Origin")
            if origin is not None and not _origin_matches_host(origin, request.host):
                return json_error(
                    403,
                    "forbidden_origin",
                    "Cross-origin request refused.",
                    f"Origin {origin!r} does not match host {request.host!r}; start the "
                    "server with --enable-cors-header to allow other origins.",
                )
        return await handler(request)

    @web.middleware
    async def token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = _token_of(request)
        if given is None or not hmac.compare_digest(given.encode(), api_token.encode()):  # type: ignore[union-attr]
            return json_error(
                401,
                "unauthorized",
                "This server needs an API token.",
                "Send 'Authorization: Bearer <token>' or open the editor once as /?token=<token>.",
            )
        response = await handler(request)
        if request.query.get("token") and not response.prepared:
            response.set_cookie(
                TOKEN_COOKIE,
                api_token,
                httponly=True,
                samesite="Strict",  # type: ignore[arg-type]
                secure=request.secure,
            )
        return response

    # The origin check runs on every listener, not only loopback: the same attack works against a
    # LAN address. A reverse proxy in front must keep the Host header (as for ComfyUI).
    middlewares: list = [errors]
    if cors_origin:
        middlewares.append(cors)
    else:
        middlewares.append(origin_check)
    if api_token:
        middlewares.append(token)
    return middlewares


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if "token" in request.query:
        return request.query["token"]
    return request.cookies.get(TOKEN_COOKIE)
