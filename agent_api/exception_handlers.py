"""One error shape per API for every failure, never an exception's text.

The native routes answer FastAPI's ``{"detail": ...}``; a route prefix can have a shape of its own
(``/v1`` answers in OpenAI's, so that the OpenAI SDKs raise their own exception classes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_api.errors import AgentAPIError
from agent_api.observability import count_error

log = logging.getLogger(__name__)

# (status, message, error type, location of the field at fault, headers) -> response
ErrorShape = Callable[[int, str, str, list[Any] | None, dict[str, str] | None], JSONResponse]


# The error type (in metrics and logs) of the HTTP errors the framework raises itself.
HTTP_ERROR_TYPES = {
    400: "validation",
    401: "auth",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _not_json(request: Request, errors: list[Any]) -> bool:
    """A body was sent, but not as JSON: FastAPI then fails the body as a whole."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return False
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    # The body as a whole is refused: at ("body",), or at ("body", <model>) for each model of a union body.
    return has_body and any(_whole_body(e) for e in errors)


def _whole_body(error: dict[str, Any]) -> bool:
    loc = tuple(error.get("loc", ()))
    return loc == ("body",) or (len(loc) == 2 and loc[0] == "body" and error.get("type") == "model_attributes_type")


def _validation_detail(errors: list[Any]) -> list[dict[str, Any]]:
    # Keep where and what; drop the echoed input and the context (it can hold exception objects),
    # and pydantic's "Value error, " before the sentences our validators write.
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")).removeprefix("Value error, "),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


class ErrorHandlers:
    def __init__(self, shapes: Mapping[str, ErrorShape]) -> None:
        self.shapes = dict(shapes)

    def _shape(self, request: Request) -> ErrorShape | None:
        path = request.url.path
        for prefix, shape in self.shapes.items():
            if path == prefix or path.startswith(prefix + "/"):
                return shape
        return None

    def _respond(
        self,
        request: Request,
        status: int,
        detail: Any,
        error_type: str,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        shape = self._shape(request)
        if shape is None:
            return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)
        if isinstance(detail, list) and detail:
            first = detail[0]
            loc = list(first.get("loc", ()))
            where = ".".join(str(p) for p in (loc[1:] if loc and loc[0] == "body" else loc))
            message = f"Invalid value for '{where}': {first.get('msg', '')}" if where else str(first.get("msg", ""))
            return shape(status, message, error_type, loc, headers)
        return shape(status, str(detail), error_type, None, headers)

    async def agent_api_error(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AgentAPIError)
        count_error(exc.error_type)
        detail = getattr(exc, "detail_body", None) or exc.detail
        return self._respond(request, exc.status_code, detail, exc.error_type, exc.headers)

    async def validation_error(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if _not_json(request, errors):
            count_error("unsupported_media_type")
            detail = "The body must be JSON, sent with 'Content-Type: application/json'."
            return self._respond(request, 415, detail, "unsupported_media_type")
        count_error("validation")
        return self._respond(request, 422, _validation_detail(errors), "validation")

    async def http_error(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error_type = HTTP_ERROR_TYPES.get(exc.status_code, "validation" if exc.status_code < 500 else "internal")
        count_error(error_type)
        if exc.status_code == 400 and isinstance(exc.__cause__, (RecursionError, ValueError)):
            # FastAPI answers 400 when the JSON parser itself fails (e.g. nesting too deep for it):
            # for the caller that is an invalid body like any other.
            detail = [
                {
                    "loc": ["body"],
                    "msg": "The body is not valid JSON (malformed or nested too deeply).",
                    "type": "json_invalid",
                }
            ]
            return self._respond(request, 422, detail, "validation")
        return self._respond(request, exc.status_code, exc.detail, error_type, dict(exc.headers or {}))

    async def unexpected_error(self, request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        count_error("internal")
        return self._respond(request, 500, "Internal server error.", "internal")


def install_exception_handlers(app: FastAPI, shapes: Mapping[str, ErrorShape] | None = None) -> None:
    """Install the handlers; ``shapes`` maps a route prefix (``/v1``) to its own error shape."""
    handlers = ErrorHandlers(shapes or {})
    app.add_exception_handler(AgentAPIError, handlers.agent_api_error)
    app.add_exception_handler(RequestValidationError, handlers.validation_error)
    app.add_exception_handler(StarletteHTTPException, handlers.http_error)
    app.add_exception_handler(Exception, handlers.unexpected_error)
