"""Every error leaves the API in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging
import re

import botocore.exceptions
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("reel.api")

_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
    405: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
    415: "invalid_request_error", 416: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error", 503: "service_unavailable",
}
_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
          415: "unsupported_media_type", 416: "range_not_satisfiable", 429: "rate_limit_exceeded",
          503: "service_unavailable"}


_UNION_MEMBERS = {"int", "float", "str", "bool", "dict", "list", "none"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or _CODES.get(status)
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.headers = headers


class BodyTooLarge(Exception):
    """Raised while reading a request body that exceeds settings.max_body_bytes."""


def error_response(status: int, message: str, *, param=None, code=None, type=None, headers=None) -> JSONResponse:
    error = APIError(status, message, param=param, code=code, type=type, headers=headers)
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_error_response(errors: list[dict], status: int = 400) -> JSONResponse:
    """The first problem, naming its field as `param` (body.metadata.key -> metadata.key)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    # Pydantic adds the tried member's name (`int`, `list[str]`, `function-after[...]`) to
    # locations inside unions; the field's own path is what the client needs.
    location = [part for part in location if part not in _UNION_MEMBERS and not re.fullmatch(r"[a-z-]+\[.*\]", part)]
    param = ".".join(location) or None
    message = first.get("msg", "invalid request")
    message = message.removeprefix("Value error, ")
    if param and param not in message:
        message = f"{param}: {message}"
    return error_response(status, message, param=param, code="invalid_value" if first.get("type") != "missing" else "missing_required_parameter")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code, type=exc.type, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError):
        return validation_error_response(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError):
        return validation_error_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge):
        return error_response(413, str(exc), code="request_too_large")

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _store_down(request: Request, exc: Exception):
        log.warning("job store unreachable: %s", exc)
        return error_response(503, "the job store is unreachable; try again shortly", code="store_unavailable",
                              headers={"Retry-After": "5"})

    @app.exception_handler(OperationalError)
    async def _broker_down(request: Request, exc: Exception):
        log.warning("task broker unreachable: %s", exc)
        return error_response(503, "the task queue is unreachable; try again shortly", code="queue_unavailable",
                              headers={"Retry-After": "5"})

    @app.exception_handler(botocore.exceptions.ConnectionError)
    @app.exception_handler(botocore.exceptions.HTTPClientError)
    async def _object_store_down(request: Request, exc: Exception):
        log.warning("object store unreachable: %s", exc)
        return error_response(503, "the object store is unreachable; try again shortly", code="storage_unavailable",
                              headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error", type="server_error", code="internal_error")
