"""``npm login``, ``npm adduser``, ``npm whoami`` and ``npm logout`` against depot.

npm will not publish without a token for the registry, even to an open depot, so an open depot
(no ``--auth-file``) hands one out the way npm asks for it. npm 11 first tries the web flow
(``POST /-/v1/login``); depot does not offer it (404), and npm falls back to asking for a
username and password (and, for ``adduser``, an e-mail address), which it sends as
``PUT /-/user/org.couchdb.user:<name>`` expecting ``201 {"token": ...}`` (npm-profile's
``loginCouch``/``adduserCouch``). Any password is accepted: an open depot lets anyone publish,
and the name is what ``npm whoami`` answers for the token. The token is random; the database
keeps its sha256 with the name, so every replica sharing the database knows it, and
``npm logout`` (``DELETE /-/user/token/<token>``) forgets it.

With ``--auth-file`` tokens come from SSH keys (``depot token``) and carry their identity: the
core refuses a login request that has no token (401, naming ``depot token``), and a request that
has one gets the same hint here. ``npm whoami`` answers the key's name.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.database import Database
from depot.core.errors import BadRequest, HTTPError, NotFound
from depot.core.sshauth import token_from_headers
from depot.npm import store
from depot.npm.responses import json_object, json_ok, read_json
from starlette.requests import Request
from starlette.responses import Response

#: What npm-user-validate lets through, and nothing that needs escaping in a URL or a log.
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,213}$")
_COUCH_USER = "org.couchdb.user:"
TOKEN_PREFIX = "depot_npm_"
#: npm sends a few hundred bytes: name, password, e-mail, date.
USER_DOCUMENT_LIMIT = 64 * 1024


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def issue_token(db: Database, username: str) -> str:
    """A new random token for ``username``; only its sha256 is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await db.execute(
        store.login_tokens.insert().values(
            token_sha256=_digest(token), username=username, created=store.now()
        )
    )
    return token


async def token_owner(db: Database, token: str) -> str | None:
    """The username a token was issued to by ``npm login``, or None."""
    return await db.fetch_val(
        sa.select(store.login_tokens.c.username).where(
            store.login_tokens.c.token_sha256 == _digest(token)
        )
    )


async def revoke_token(db: Database, token: str) -> None:
    await db.execute(
        store.login_tokens.delete().where(store.login_tokens.c.token_sha256 == _digest(token))
    )


def _auth_file_hint(ctx: EcosystemContext, request: Request) -> HTTPError:
    """401 with the line that does log npm in, and no ``WWW-Authenticate`` challenge.

    npm replaces the reason of a 401 that carries a Bearer challenge with "your authentication
    token seems to be invalid ... npm login", which sends the user round in a circle.
    """
    registry = ctx.external_url(request, "/").split("://", 1)[-1]
    return HTTPError(
        401,
        "npm login is not used with --auth-file: run "
        f'npm config set //{registry}:_authToken "$(depot token)"',
    )


def is_login_request(request: Request) -> bool:
    path = request.url.path
    return path.endswith("/-/v1/login") or "/-/user/org.couchdb.user:" in path


def explain_refusal(ctx: EcosystemContext, request: Request, exc: HTTPError) -> HTTPError:
    """The core's 401 for a login request without a depot token becomes the hint to get one."""
    if exc.status == 401 and ctx.settings.auth_file and is_login_request(request):
        return _auth_file_hint(ctx, request)
    return exc


async def web_login(ctx: EcosystemContext, request: Request) -> Response:
    """``POST /-/v1/login``: no web flow here; a 4xx makes npm ask for a username instead."""
    if ctx.settings.auth_file:
        raise _auth_file_hint(ctx, request)
    raise NotFound("depot offers no web login: npm asks for a username and password instead")


async def couch_login(ctx: EcosystemContext, request: Request, user: str) -> Response:
    """``PUT /-/user/org.couchdb.user:<name>`` (login and adduser): 201 with a new token."""
    if ctx.settings.auth_file:
        raise _auth_file_hint(ctx, request)
    if request.method != "PUT" or not user.startswith(_COUCH_USER):
        raise NotFound(f"no such user endpoint /-/user/{user}")
    username = user.removeprefix(_COUCH_USER)
    if not _USERNAME.match(username):
        raise BadRequest(f"invalid username {username!r}: letters, digits, '.', '_' and '-' only")
    body = json_object(await read_json(request, USER_DOCUMENT_LIMIT), "the user document")
    if body.get("name") != username:
        raise BadRequest(f"the user document names {body.get('name')!r}, not {username!r}")
    token = await issue_token(ctx.db, username)
    ctx.log.info("npm login", extra={"username": username})
    return json_ok({"ok": True, "id": _COUCH_USER + username, "token": token}, 201)


async def whoami(ctx: EcosystemContext, request: Request) -> Response:
    """The token's identity: the SSH key's name, the ``npm login`` name, else ``anonymous``."""
    username = request.scope.get("depot.identity")
    token = token_from_headers(request.headers.get("authorization"))
    if username is None and token is not None and not ctx.settings.auth_file:
        username = await token_owner(ctx.db, token)
    return json_ok({"username": username or "anonymous"})


async def logout(ctx: EcosystemContext, request: Request, token: str) -> Response:
    """``DELETE /-/user/token/<token>`` (npm logout): forget a token ``npm login`` issued."""
    await revoke_token(ctx.db, token)
    return json_ok({"ok": True})
