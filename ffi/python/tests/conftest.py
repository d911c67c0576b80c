"""The real tessera-server as a child process on a loopback port, and a vendor who sets up licenses through its
admin API, for the Python package's tests.

``TESSERA_SERVER_BIN`` names the server binary (ffi/tests/python.rs sets it to cargo's target/debug build).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    """When the runner installed the package, the suite must be testing that copy (and its bundled library)."""
    expected = os.environ.get("TESSERA_EXPECT_PACKAGE_IN")
    if expected:
        import tessera
        from tessera import _native

        where = Path(tessera.__file__).resolve()
        assert where.is_relative_to(Path(expected).resolve()), f"tessera was imported from {where}, not {expected}"
        assert Path(_native.find_library()).resolve().parent == where.parent, "the bundled libtessera is used"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One tessera-server process on its own data directory; stop() and start() keep both the data and the port."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin = ""
        self.keyset = ""

    def start(self) -> None:
        env = dict(os.environ, RUST_LOG="warn")
        for limit in ("TESSERA_RATE_LIMIT_PER_IP", "TESSERA_RATE_LIMIT_PER_KEY", "TESSERA_RATE_LIMIT_ADMIN_PER_IP"):
            env[limit] = "0"
        self.process = subprocess.Popen(
            [self.binary, "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"tessera-server exited with {self.process.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tessera-server did not become ready on {self.url}")
            time.sleep(0.05)
        self.admin = (self.data_dir / "admin-token").read_text().strip()
        if not self.keyset:
            out = subprocess.run(
                [self.binary, "keys", "export", "--data-dir", str(self.data_dir)],
                check=True,
                capture_output=True,
            )
            self.keyset = out.stdout.decode()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def ok(self, path: str, token: str, body: Any) -> Any:
        status, answer = self.call("POST", path, token, body)
        assert 200 <= status < 300, f"POST {path}: {status} {answer}"
        return answer

    def usage_on_server(self, license_id: str, feature: str) -> int:
        """The server's record of a license's use, read from its database."""
        with sqlite3.connect(f"file:{self.data_dir / 'tessera.db'}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT COALESCE(SUM(total), 0) FROM usage_totals WHERE license_id = ? AND feature = ?",
                (license_id, feature),
            ).fetchone()
        return int(row[0])


@dataclass
class License:
    """A tenant with a product, a template and one license, made through the admin API."""

    token: str
    product_id: str
    template_id: str
    license_id: str
    key: str


_names = itertools.count()


def make_license(server: Server, **template: Any) -> License:
    name = f"py-{next(_names)}"
    tenant = server.ok("/v1/tenants", server.admin, {"name": name})["id"]
    token = server.ok("/v1/tokens", server.admin, {"name": "pytest", "role": "tenant-admin", "tenant_id": tenant})[
        "token"
    ]
    product = server.ok("/v1/products", token, {"name": f"{name} app"})["id"]
    body = {
        "name": "standard",
        "product_id": product,
        "license_type": "SUBSCRIPTION",
        "max_activations": 3,
        "duration_days": 365,
        "grace_days": 7,
        "heartbeat_interval_secs": 60,
        "lease_secs": 3600,
        # The tests' machines have pinned identities (several "machines" in one process), which a policy must allow.
        "fingerprint_policy": {"required": 3, "deal_breakers": ["machine_id", "pinned"], "allow_pinned": True},
        "features": [{"id": "export_pdf"}, {"id": "api_calls", "limit_value": 100}, {"id": "beta_lab", "enabled": False}],
    }
    body.update(template)
    tpl = server.ok("/v1/templates", token, body)["id"]
    customer = server.ok("/v1/customers", token, {"name": "Ada", "email": "ada@example.com"})["id"]
    lic = server.ok("/v1/licenses", token, {"template_id": tpl, "customer_id": customer})
    return License(token, product, tpl, lic["id"], lic["license_key"])


def _binary() -> str:
    binary = os.environ.get("TESSERA_SERVER_BIN")
    if not binary or not Path(binary).is_file():
        pytest.exit("set TESSERA_SERVER_BIN to the tessera-server binary (cargo build -p tessera-server)", 2)
    return binary


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One server for the tests that keep it running."""
    with tempfile.TemporaryDirectory(prefix="tessera-py-") as d:
        s = Server(_binary(), Path(d))
        s.start()
        yield s
        s.stop()


@pytest.fixture
def own_server() -> Iterator[Server]:
    """A server of the test's own, which it may stop and start."""
    with tempfile.TemporaryDirectory(prefix="tessera-py-") as d:
        s = Server(_binary(), Path(d))
        s.start()
        yield s
        s.stop()


_machines = itertools.count()


@pytest.fixture
def machine(tmp_path: Path) -> Any:
    """A new customer machine: a fresh state file and identity; ``machine(server, lic, **options)`` opens an agent."""
    import tessera

    opened: list[tessera.Agent] = []

    def open_agent(server: Server | None, lic: License, *, online: bool = True, **options: Any) -> tessera.Agent:
        n = next(_machines)
        options.setdefault("state_path", tmp_path / f"machine-{n}.db")
        options.setdefault("pinned_identity", f"py-machine-{n}")
        agent = tessera.Agent(
            options.pop("state_path"),
            keyset=options.pop("keyset", server.keyset if server else ""),
            product_id=options.pop("product_id", lic.product_id),
            server_url=server.url if (server and online) else None,
            **options,
        )
        opened.append(agent)
        return agent

    yield open_agent
    for a in opened:
        a.close()
