"""Fixtures for the real-browser tests.

* ``browser`` (session): headless Debian Chromium driven by Playwright's sync API (no
  pytest-playwright). Skips the e2e tests only when the Chromium binary is missing.
* ``blocked_requests`` / ``context`` / ``page`` (per test): a fresh browser context whose every
  request to a host other than 127.0.0.1/localhost/::1 is aborted and recorded in
  ``blocked_requests`` (web sockets too), so a test can assert the page stayed offline. On failure
  the page fixture saves ``test-artifacts/FAILED-<test>.png`` and prints the browser console.
* ``voila_server(notebook)`` / ``lab_server(root_dir)`` / ``marimo_server(app)`` (per test
  factories, on one ``server_factory`` that stops them all): start the server from
  the test environment's bin folder on a free loopback port, in its own session (process group),
  with temporary Jupyter runtime/config/data dirs and ``CNNVIS_NUM_THREADS=1``; wait until the
  HTTP port answers; at teardown stop the process group *and* every descendant (Jupyter starts
  kernels in sessions of their own), printing the server log when the test failed.
* ``voila_widget(cell, has=None)`` (per test factory): a one-cell notebook served by Voila and
  opened in ``page``; returns the root of its widget.
* ``artifacts_dir`` (session): ``<repo>/test-artifacts`` (git-ignored), for screenshots.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_helpers import REPO, is_loopback_url, write_notebook
from widget_view import open_widget

from cnnvis_widgets.report import CHROMIUM_OFFLINE_FLAGS

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CNNVIS_CHROMIUM", "/usr/bin/chromium")
VOILA_TEMPLATES = REPO / "cnnvis_widgets" / "_jupyter"
# The environment the tests run in (the repo's .venv locally): voila/jupyter come from here.
BIN = Path(sys.executable).parent
# the report's PDF printer's flags (no sandbox, no GPU, no background network) and small /dev/shm
CHROMIUM_ARGS = [*CHROMIUM_OFFLINE_FLAGS, "--disable-dev-shm-usage"]
SERVER_START_TIMEOUT = 120.0
# Matches every URL that is neither loopback http(s)/ws(s) nor a local scheme; only these reach
# the Python route handler (matching runs in the browser driver, loopback traffic is not slowed).
NON_LOOPBACK_RE = re.compile(
    r"^(?!(?:https?|wss?)://(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?(?:[/?#]|$)"
    r"|(?:data|blob|about|chrome|chrome-extension|devtools):)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# failure reporting


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# --------------------------------------------------------------------------------------------
# servers


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..."; comm may contain spaces/parens: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: list[int], pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    url: str  # the page to open in the browser
    base_url: str
    log_path: Path
    token: str = ""
    start_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    def wait_ready(self, probe_url: str, timeout: float, headers: dict[str, str]) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode} before answering.\n"
                    f"--- log ---\n{self.log_tail()}"
                )
            try:
                req = urllib.request.Request(probe_url, headers=headers)
                with urllib.request.urlopen(req, timeout=5) as resp:
                    resp.read(1)
                self.start_seconds = time.monotonic() - t0
                return
            except urllib.error.HTTPError:
                # Any HTTP status means the server answers.
                self.start_seconds = time.monotonic() - t0
                return
            except (OSError, ValueError) as exc:  # connection refused, reset, timeout
                last = repr(exc)
            time.sleep(0.25)
        raise RuntimeError(
            f"{self.name} did not answer on port {self.port} within {timeout:.0f} s "
            f"(last error: {last}).\n--- log ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        pgid = self.proc.pid  # start_new_session=True: the server leads its own group
        pids = _descendants(self.proc.pid)  # kernels live in sessions of their own
        _signal_all(pids, pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        pids += [p for p in _descendants(self.proc.pid) if p not in pids]
        _signal_all(pids, pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for sub in ("runtime", "config", "data", "ipython"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        IPYTHONDIR=str(home / "ipython"),
        CNNVIS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        # The kernels import cnnvis_widgets from the working tree even when it is not installed.
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra or {})
    return env


class _ServerFactory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.servers: list[Server] = []

    def _spawn(
        self, name: str, cmd: list[str], cwd: Path, port: int, env: dict[str, str] | None, **kw
    ) -> Server:
        home = self._tmp.mktemp(f"{name}-home")
        log_path = home / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed below, the child keeps its copy
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=_server_env(home, env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        server = Server(name=name, proc=proc, port=port, log_path=log_path, **kw)
        self.servers.append(server)
        return server

    def stop_all(self, failed: bool) -> None:
        for server in self.servers:
            server.stop()
            if failed:
                print(f"\n===== {server.name} log ({server.log_path}) =====\n{server.log_tail()}")


def _existing_file(path: str | os.PathLike) -> Path:
    found = Path(path).resolve()
    if not found.is_file():
        raise FileNotFoundError(found)
    return found


@pytest.fixture
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[_ServerFactory]:
    """The servers a test starts; at teardown all are stopped (their logs printed on failure)."""
    factory = _ServerFactory(tmp_path_factory)
    yield factory
    factory.stop_all(_failed(request))


@pytest.fixture
def voila_server(server_factory: _ServerFactory) -> Callable[..., Server]:
    """Factory: ``voila_server(notebook_path, extra_args=(), env=None, timeout=120) -> Server``.

    Voila executes the notebook for each page request (in a new kernel), so ``page.goto`` on
    ``server.url`` takes as long as the notebook runs.
    """

    def start(
        notebook_path: str | os.PathLike,
        extra_args: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
        timeout: float = SERVER_START_TIMEOUT,
    ) -> Server:
        nb = _existing_file(notebook_path)
        port = free_port()
        cmd = [
            str(BIN / "voila"),
            str(nb),
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            f"--port={port}",
            "--Voila.port_retries=0",
            "--VoilaConfiguration.show_tracebacks=True",
            # the project's template: Voila's "lab" page without its two CDN stylesheets
            "--template=cnnvis",
            *extra_args,
        ]
        env = {"JUPYTER_PATH": str(VOILA_TEMPLATES), **(env or {})}
        base = f"http://127.0.0.1:{port}/"
        server = server_factory._spawn("voila", cmd, nb.parent, port, env, url=base, base_url=base)
        # A 404 on a probe path is cheap; GET / would execute the notebook.
        server.wait_ready(base + "cnnvis-e2e-probe", timeout, {})
        return server

    return start


@pytest.fixture
def voila_widget(voila_server, page, tmp_path: Path) -> Callable[..., object]:
    """Factory: ``voila_widget(cell, has=None, **server_kw) -> root``: serves a notebook of the
    one code ``cell`` with ``voila_server``, opens it in ``page`` and returns the root of the
    widget that contains ``has`` (a CSS selector; see ``widget_view.open_widget``)."""

    def start(cell: str, has: str | None = None, **server_kw) -> object:
        server = voila_server(write_notebook(tmp_path / "widget.ipynb", [cell]), **server_kw)
        print(f"voila answered after {server.start_seconds:.1f} s")
        return open_widget(page, server.url, has=has)

    return start


@pytest.fixture
def lab_server(server_factory: _ServerFactory) -> Callable[..., Server]:
    """Factory: ``lab_server(root_dir, open_path=None, extra_args=(), env=None, timeout=120)``.

    ``server.url`` opens ``lab/tree/<open_path>`` (or ``lab``) with the token in the query.
    """

    def start(
        root_dir: str | os.PathLike,
        open_path: str | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
        timeout: float = SERVER_START_TIMEOUT,
    ) -> Server:
        root = Path(root_dir).resolve()
        port = free_port()
        token = secrets.token_hex(16)
        cmd = [
            str(BIN / "jupyter"),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *extra_args,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        base = f"http://127.0.0.1:{port}/"
        page = f"lab/tree/{open_path}" if open_path else "lab"
        server = server_factory._spawn(
            "jupyterlab",
            cmd,
            root,
            port,
            env,
            url=f"{base}{page}?token={token}",
            base_url=base,
            token=token,
        )
        server.wait_ready(base + "api/status", timeout, {"Authorization": f"token {token}"})
        return server

    return start


# --------------------------------------------------------------------------------------------
# browser


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def blocked_requests() -> list[str]:
    """Every non-loopback request the page tried ("METHOD url"); it was aborted."""
    return []


@pytest.fixture
def context(browser, blocked_requests: list[str]):
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 1000}, service_workers="block", accept_downloads=False
    )

    def on_route(route) -> None:
        req = route.request
        if is_loopback_url(req.url):  # defensive: the regex already excludes these
            route.continue_()
            return
        blocked_requests.append(f"{req.method} {req.url}")
        route.abort("blockedbyclient")

    def on_ws(ws) -> None:
        blocked_requests.append(f"WEBSOCKET {ws.url}")
        ws.close()

    ctx.route(NON_LOOPBACK_RE, on_route)
    ctx.route_web_socket(lambda url: not is_loopback_url(url), on_ws)
    try:
        yield ctx
    finally:
        ctx.close()


@dataclass
class BrowserLog:
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def page(context, browser_log: BrowserLog, request: pytest.FixtureRequest, artifacts_dir: Path):
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    pg.set_default_navigation_timeout(300_000)
    pg.on("console", lambda m: browser_log.console.append(f"[{m.type}] {m.text}"))
    pg.on("pageerror", lambda e: browser_log.errors.append(str(e)))
    try:
        yield pg
    finally:
        if _failed(request):
            shot = artifacts_dir / f"FAILED-{_safe_name(request.node.name)}.png"
            try:
                pg.screenshot(path=str(shot), full_page=True, timeout=30_000)
                print(f"\nscreenshot of the failed page: {shot}")
            except Exception as exc:  # noqa: BLE001 - best effort while reporting a failure
                print(f"\n(no screenshot: {exc!r})")
            print("\n===== browser console (last 80) =====")
            print("\n".join(browser_log.console[-80:]))
            if browser_log.errors:
                print("===== page errors =====\n" + "\n".join(browser_log.errors))
        pg.close()


@pytest.fixture
def cnnvis_lab_server(lab_server) -> Callable[..., Server]:
    """``lab_server`` with the Lab settings that ``cnnvis lab`` / ``make lab`` ship
    (cnnvis_widgets/_jupyter/lab/settings/overrides.json: widget state saved into notebooks, no
    news toast). Only the settings folder is added: ``lab_server`` already passes the other
    options, and a repeated ``--LabApp.*`` option makes JupyterLab drop the settings folder."""
    from cnnvis_widgets.cli import lab_settings_dir

    def start(root_dir, open_path=None, extra_args=(), **kw) -> Server:
        args = [f"--LabApp.app_settings_dir={lab_settings_dir()}", *extra_args]
        return lab_server(root_dir, open_path, extra_args=args, **kw)

    return start


@pytest.fixture
def marimo_server(
    server_factory: _ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Server]:
    """Factory: ``marimo_server(app_path, env=None, timeout=120) -> Server``.

    Serves a marimo app with ``marimo run APP --headless --no-token`` on a free loopback port,
    in its own process group, with HOME and the XDG folders in a temporary directory (marimo
    keeps its config and state there); stopped with its process group at teardown. Skips when
    marimo is not installed (it is a dev/test dependency).
    """
    exe = BIN / "marimo"
    if not exe.exists():
        pytest.skip("marimo is not installed (pip install marimo)")

    def start(
        app_path: str | os.PathLike,
        env: dict[str, str] | None = None,
        timeout: float = SERVER_START_TIMEOUT,
    ) -> Server:
        app = _existing_file(app_path)
        port = free_port()
        home = tmp_path_factory.mktemp("marimo-user")
        cmd = [
            str(exe),
            "run",
            str(app),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--headless",
            "--no-token",
            "--no-sandbox",
        ]
        extra = {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "MARIMO_SKIP_UPDATE_CHECK": "1",
            **(env or {}),
        }
        base = f"http://127.0.0.1:{port}/"
        server = server_factory._spawn(
            "marimo", cmd, app.parent, port, extra, url=base, base_url=base
        )
        server.wait_ready(base + "health", timeout, {})
        return server

    return start
