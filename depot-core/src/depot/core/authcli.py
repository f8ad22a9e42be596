"""``depot token`` and ``depot proxy``: the client side of SSH-key authentication."""

from __future__ import annotations

from collections.abc import Sequence

import click
from depot.core.hookspecs import hookimpl

_KEY_HELP = (
    "SSH key to sign with: a private key file, or a .pub whose private half is in ssh-agent "
    "[default: the first ssh-agent key, then ~/.ssh/id_* without passphrase]."
)


@click.command("token")
@click.option("--key", "key_path", envvar="DEPOT_KEY", show_envvar=True, help=_KEY_HELP)
@click.option(
    "--expires", default="24h", show_default=True, help="Lifetime: 90s, 30m, 24h, 7d, ..."
)
@click.option(
    "--audience",
    default=None,
    help="URL of the depot the token is for (e.g. https://depot.example.com); recommended.",
)
def token_command(key_path: str | None, expires: str, audience: str | None) -> None:
    """Print a token signed by your SSH key, and nothing else.

    Use it where a client takes a password or token: npm's _authToken, pip's index URL
    (http://__token__:<token>@host/python/simple/), twine -u __token__ -p <token>, a netrc file.
    """
    from depot.core.tokens import mint_token, parse_duration

    click.echo(mint_token(audience=audience, key_path=key_path, expires=parse_duration(expires)))


@click.command("proxy")
@click.argument("url")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=43407,
    show_default=True,
    help="Local port; 0 picks a free one (printed on start).",
)
@click.option(
    "--listen-host",
    default="127.0.0.1",
    show_default=True,
    help="Local address; anyone who reaches it writes with your key, so keep it loopback.",
)
@click.option("--key", "key_path", envvar="DEPOT_KEY", show_envvar=True, help=_KEY_HELP)
@click.option("--verbose", is_flag=True, help="Log every forwarded request.")
def proxy_command(
    url: str, port: int, listen_host: str, key_path: str | None, verbose: bool
) -> None:
    """Forward http://127.0.0.1:PORT to URL, adding a fresh token to every request.

    For clients that cannot send a token themselves, e.g.
    nix copy --to http://127.0.0.1:43407/nix <path>. Prints the local URL once it listens.
    """
    import asyncio
    import logging

    from depot.core.logs import configure_logging
    from depot.core.proxy import serve_forever

    configure_logging(verbose)
    if not verbose:
        logging.getLogger("depot.proxy").setLevel(logging.WARNING)

    def announce(local: str) -> None:
        click.echo(local)  # the first line of stdout: scripts read the port from it
        click.echo(f"depot proxy: {local} -> {url.rstrip('/')} (Ctrl-C to stop)", err=True)

    asyncio.run(serve_forever(url, port, host=listen_host, key_path=key_path, announce=announce))


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    return [token_command, proxy_command]
