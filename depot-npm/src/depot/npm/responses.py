"""JSON in and out, as npm expects it: ``{"error": "..."}`` bodies, bounded request bodies."""

from __future__ import annotations

import json
from typing import Any

from depot.core.errors import BadRequest, HTTPError
from depot.core.http import read_limited_body
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def error_response(request: Request, exc: HTTPError) -> Response:
    """npm reads ``{"error": "..."}`` bodies and shows the reason to the user."""
    if request.method == "HEAD":
        return Response(status_code=exc.status, headers=exc.headers)
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)


def json_ok(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


async def read_json(request: Request, limit: int = 16 * 1024 * 1024) -> Any:
    """The request body as JSON; 413 past ``limit``, 400 when malformed."""
    body = await read_limited_body(request, limit)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value
