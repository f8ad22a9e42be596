"""Pytest fixtures for depot and its plugins: a real ``depot serve`` and an in-process app.

Plugin test suites load these with ``pytest_plugins = ["depot.core.testing"]``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DepotServer:
    """A ``depot serve`` subprocess on a free loopback port, logging to ``<store>/server.log``."""

    def __init__(
        self,
        store_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        python: str | Path = sys.executable,
    ) -> None:
        self.store_path = store_path
        self.python = str(python)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.log_path = store_path.parent / f"{store_path.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def another(self) -> DepotServer:
        """A second process on the same store and database with the same arguments (started;
        the caller stops it): two replicas on one machine, each reached at its own port."""
        return DepotServer(self.store_path, *self.args, env=self.env, python=self.python).start()

    def start(self, timeout: float = 30.0) -> DepotServer:
        self.store_path.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        cmd = [
            self.python, "-m", "depot.core", "serve",
            "--listen-addr", f"127.0.0.1:{self.port}",
            "--store-path", str(self.store_path),
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"depot serve exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/-/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"depot serve did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def settled_log(self, quiet: float = 0.2, timeout: float = 10.0) -> str:
        """The log once it has not grown for ``quiet`` seconds: the access line of a request is
        written just after its response (with the rest of its event-loop turn), so a count read
        the moment a client finishes can miss the last one."""
        deadline = time.monotonic() + timeout
        text = self.log()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            again = self.log()
            if again == text:
                break
            text = again
        return text

    def wait_for_log(self, fragment: str, timeout: float = 10.0) -> str:
        """The log once it contains ``fragment`` (access lines are written after the response)."""
        deadline = time.monotonic() + timeout
        while fragment not in (text := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return text

    def requests_for(self, path: str, method: str = "GET") -> list[dict[str, Any]]:
        """The access lines logged so far for ``method path`` (status, bytes sent, ...)."""
        lines = []
        for line in self.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            wanted = (method, path)
            if isinstance(entry, dict) and (entry.get("method"), entry.get("path")) == wanted:
                lines.append(entry)
        return lines

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def make_depot_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., DepotServer]]:
    """Start ``depot serve`` with extra flags: ``make_depot_server("--private-key", key)``."""
    servers: list[DepotServer] = []

    def make(
        *args: str, store_path: Path | None = None, env: dict[str, str] | None = None
    ) -> DepotServer:
        store = store_path or tmp_path_factory.mktemp("depot") / "store"
        server = DepotServer(store, *args, env=env).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def depot_server(make_depot_server: Callable[..., DepotServer]) -> DepotServer:
    """A running ``depot serve`` with an empty store and default settings."""
    return make_depot_server()


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to an in-process depot (no lifespan, as when mounted)."""
    from depot.core import create_app

    app = create_app(store_path=tmp_path / "store")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        yield client
    await app.state.depot.shutdown()


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a client command, failing the test with its output if it fails."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    check = kwargs.pop("check", True)
    result = subprocess.run(cmd, **kwargs)  # noqa: S603 - tests run their own commands
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def depot_gc(server: DepotServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``depot gc ARGS`` on ``server``'s store (its path, and the database and S3 flags it was
    started with), as an operator runs it beside or after the depot; fails the test if it fails.
    Its output lists what was removed and evicted."""
    store_flags: list[str] = []
    flags = list(server.args)
    for i, flag in enumerate(flags):
        if flag in ("--database-url", "--storage-type") or flag.startswith("--s3-"):
            store_flags.append(flag)
            if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
                store_flags.append(flags[i + 1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPOT_")}
    cmd = [sys.executable, "-m", "depot.core", "gc", "--store-path", str(server.store_path)]
    return run([*cmd, *store_flags, *args], env=env)


def start_depot_with_auth(directory: Path, *auth_lines: str) -> DepotServer:
    """``depot serve --auth-file`` on ``directory / "store"``, the file ``directory / "auth.keys"``
    holding ``auth_lines``, one a line. The caller stops it."""
    auth = directory / "auth.keys"
    auth.write_text("".join(line + "\n" for line in auth_lines))
    return DepotServer(directory / "store", "--auth-file", str(auth)).start()


def start_depot_proxy(
    url: str, key_path: Path, env: dict[str, str], stderr: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``depot proxy URL --port 0 --key KEY_PATH`` as a user runs it; the local URL it serves
    is the first line of its stdout. The caller terminates it."""
    return subprocess.Popen(  # noqa: S603 - tests run their own commands
        [sys.executable, "-m", "depot.core", "proxy", url, "--port", "0", "--key", str(key_path)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )


def run_answering(
    cmd: list[str], prompts: list[tuple[str, str]], timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run an interactive command, typing each reply once its prompt shows on stdout or stderr.

    For clients that prompt on stdin (``npm login``): each prompt may read with a fresh reader
    that would swallow answers written ahead of it, so a reply goes out only after its prompt.
    Returns the combined output as both ``stdout`` and ``stderr``; does not check the exit code.
    """
    process = subprocess.Popen(  # noqa: S603 - tests run their own commands
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )
    assert process.stdin is not None and process.stdout is not None
    output: list[str] = []

    def read_output() -> None:
        assert process.stdout is not None
        for char in iter(lambda: process.stdout.read(1), ""):  # type: ignore[union-attr]
            output.append(char)

    reader = threading.Thread(target=read_output)
    reader.start()
    deadline = time.monotonic() + timeout
    seen = 0  # answered prompts lie before this offset of the output
    try:
        for prompt, reply in prompts:
            while (found := "".join(output).find(prompt, seen)) < 0:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{cmd[0]} never asked {prompt!r}:\n{''.join(output)}")
                time.sleep(0.05)
            seen = found + len(prompt)
            process.stdin.write(reply + "\n")
            process.stdin.flush()
        process.stdin.close()
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join()
    text = "".join(output)
    return subprocess.CompletedProcess(cmd, returncode, text, text)


# -- SSH keys and ssh-agent, for tests of authenticated depots ---------------------------------

#: ``ssh-keygen`` arguments for each key type depot's tokens support.
SSH_KEY_KINDS: dict[str, list[str]] = {
    "ed25519": ["-t", "ed25519"],
    "rsa": ["-t", "rsa", "-b", "2048"],
    "ecdsa-p256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa-p384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa-p521": ["-t", "ecdsa", "-b", "521"],
}


class SshKey:
    """A key pair made by ``ssh-keygen``: ``path`` (private), ``public_line``, ``fingerprint``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.public_path = path.with_name(path.name + ".pub")
        self.public_line = self.public_path.read_text().strip()
        self.key_type = self.public_line.split()[0]
        listed = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.public_path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.fingerprint = listed.stdout.split()[1]

    def auth_line(self, permission: str) -> str:
        """This key's line in a depot auth file, ``r`` or ``w``."""
        return f"{permission} {self.public_line}"


@pytest.fixture(scope="session")
def make_ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., SshKey]:
    """Make a fresh key pair with ``ssh-keygen``: ``make_ssh_key("ecdsa-p384", passphrase="")``."""
    directory = tmp_path_factory.mktemp("ssh-keys")
    counter = iter(range(1_000_000))

    def make(kind: str = "ed25519", passphrase: str = "") -> SshKey:
        path = directory / f"id_{kind}_{next(counter)}"
        subprocess.run(
            ["ssh-keygen", "-q", *SSH_KEY_KINDS[kind], "-N", passphrase,
             "-C", f"{kind}@depot-test", "-f", str(path)],
            check=True, capture_output=True,
        )  # fmt: skip
        return SshKey(path)

    return make


class SshAgent:
    """A real ``ssh-agent`` on its own socket; ``env`` points clients at it."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.env = {"SSH_AUTH_SOCK": str(socket_path)}
        self.process = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(socket_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ssh-agent did not start")
            time.sleep(0.02)

    def add(self, key: SshKey) -> SshKey:
        subprocess.run(
            ["ssh-add", "-q", str(key.path)],
            env={**os.environ, **self.env}, check=True, capture_output=True,
        )  # fmt: skip
        return key

    def remove_all(self) -> None:
        subprocess.run(["ssh-add", "-D"], env={**os.environ, **self.env}, capture_output=True)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def ssh_agent() -> Iterator[SshAgent]:
    """One ``ssh-agent`` for the session (``ssh-agent -D -a <socket>``), emptied by each user."""
    import tempfile

    # A Unix socket path must stay short (about 100 bytes): pytest's tmp paths can be longer.
    directory = Path(tempfile.mkdtemp(prefix="depot-agent-"))
    agent = SshAgent(directory / "agent.sock")
    yield agent
    agent.stop()
    shutil.rmtree(directory, ignore_errors=True)


def metric(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` matching ``labels`` in Prometheus text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def until_fresh(check: Callable[[], bool], within: float, streak: int = 10) -> float:
    """Poll ``check`` until it holds ``streak`` times in a row; fail on a stale answer to a
    request sent more than ``within`` seconds after the call began.

    For changes that other processes learn of within a bound (depot.core.changes): with several
    workers behind one socket any one request may reach any worker, so a run of consecutive
    fresh answers is what shows every worker has caught up. The bound applies to when a request
    was sent, not to how long a loaded machine takes to answer the run. Returns the seconds
    until the last stale answer.
    """
    start = time.monotonic()
    run_length = 0
    last_stale = 0.0
    while run_length < streak:
        sent = time.monotonic() - start
        if check():
            run_length += 1
            continue
        if sent > within:
            pytest.fail(
                f"stale answer to a request sent {sent:.2f} s after the write "
                f"(the bound allows {within:.2f} s)"
            )
        run_length, last_stale = 0, sent
    return last_stale


# -- A real browser, for tests of the pages people read ------------------------------------------

#: What the hostile readme tests put in a package's readme: each line would change the page's
#: title if a browser ran it. :class:`Chromium` shows whether one did.
HOSTILE_README = """# Hostile readme

<script>document.title = "pwned-script"</script>
<img src="missing-image.png" onerror="document.title = 'pwned-onerror'">
<svg><script>document.title = "pwned-svg"</script></svg>
<body onload="document.title = 'pwned-onload'">
<iframe srcdoc="<script>parent.document.title = 'pwned-iframe'</script>"></iframe>
<a href="javascript:document.title = 'pwned-link'">a javascript: link</a>
<div onclick="document.title = 'pwned-click'" style="position:fixed;inset:0">raw HTML block</div>
<style>body { display: none }</style>
<form action="https://evil.example/"><input name="q"></form>

A [markdown javascript: link](javascript:document.title='pwned-md') and **bold text that stays**.
"""


def _runs(url: str | None) -> bool:
    return (url or "").strip().lower().startswith(("javascript:", "vbscript:", "data:text/html"))


class _DomScan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self._in_title = False
        self._in_head = False
        self.dangers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_title = tag == "title"
        self._in_head = self._in_head or tag == "head"
        found = dict(attrs)
        ours = (tag == "style" and self._in_head) or (
            tag == "form" and found.get("class") == "search"
        )
        if tag in ("script", "iframe", "object", "embed", "form", "style", "base") and not ours:
            self.dangers.append(f"<{tag}> element")
        for name, value in attrs:
            if name.startswith("on") or name in ("style", "srcdoc"):
                self.dangers.append(f"{name}= on <{tag}>")
            elif name in ("href", "src", "action", "formaction") and _runs(value):
                self.dangers.append(f"{name}={value!r} on <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False
        if tag == "head":
            self._in_head = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def scan_dom(dom: str) -> tuple[str, list[str]]:
    """The title of a dumped DOM and everything in it that could run script or restyle the page
    (script, frame and form elements, ``on*`` and ``style`` attributes, ``javascript:`` URLs).

    Depot's own style sheet in the head and its search form are not counted."""
    scan = _DomScan()
    scan.feed(dom)
    return scan.title, scan.dangers


class Chromium:
    """Debian's headless Chromium with a fresh profile and no background traffic."""

    def __init__(self, profile: Path) -> None:
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        if found is None:
            pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
        self.binary = found
        self.profile = profile

    def _run(self, *args: str) -> str:
        result = subprocess.run(  # noqa: S603 - tests run their own commands
            [
                self.binary, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", f"--user-data-dir={self.profile}", *args,
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    def dom(self, url: str, window: str = "1280,900") -> str:
        """The DOM after the page loaded and its scripts (if any) had 3 s of virtual time."""
        return self._run("--virtual-time-budget=3000", f"--window-size={window}", "--dump-dom", url)

    def screenshot(self, url: str, path: Path, window: str = "1280,1400") -> Path:
        self._run(f"--screenshot={path}", f"--window-size={window}", url)
        return path


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    """A headless Chromium (skips the test when it is not installed)."""
    return Chromium(tmp_path / "chromium-profile")
