"""JSON in and out, as npm expects it: ``{"error": "..."}`` bodies, bounded request bodies."""

from __future__ import annotations

from typing import Any

from depot.core.errors import BadRequest, HTTPError
from depot.core.limits import MAX_JSON_BODY, read_json_body
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def error_response(request: Request, exc: HTTPError) -> Response:
    """npm reads ``{"error": "..."}`` bodies and shows the reason to the user."""
    if request.method == "HEAD":
        return Response(status_code=exc.status, headers=exc.headers)
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)


def json_ok(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


async def read_json(request: Request, limit: int = MAX_JSON_BODY) -> Any:
    """The request body as JSON within the core's limits; 413 past ``limit``, 400 when malformed."""
    return await read_json_body(request, limit)


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value
