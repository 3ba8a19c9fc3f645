"""One error shape for every failure: FastAPI's ``{"detail": ...}``, never an exception's text."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_api.errors import AgentAPIError
from agent_api.observability import count_error

log = logging.getLogger(__name__)


def _validation_detail(errors: list[Any]) -> list[dict[str, Any]]:
    # Keep where and what; drop the echoed input and the context (it can hold exception objects).
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors
    ]


async def _agent_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentAPIError)
    count_error(exc.error_type)
    detail = getattr(exc, "detail_body", None) or exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    count_error("validation")
    return JSONResponse({"detail": _validation_detail(list(exc.errors()))}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    count_error({404: "not_found", 405: "validation", 413: "validation"}.get(exc.status_code, "validation"))
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
        return JSONResponse({"detail": detail}, status_code=422)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    count_error("internal")
    return JSONResponse({"detail": "Internal server error."}, status_code=500)


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AgentAPIError, _agent_api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
