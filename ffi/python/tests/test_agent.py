"""The Python package against the real server and the real libtessera: the flows of the Rust e2e suite (online
activation, checks with the server stopped, request and response codes, quota use synced once), what a customer
might try, and bad input."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import tessera
from conftest import Server, make_license

HERE = Path(__file__).resolve().parent
HEADER = HERE.parent.parent / "include" / "tessera.h"


def test_the_package_speaks_the_library_s_abi_and_codes() -> None:
    header = HEADER.read_text()
    assert f"#define TESSERA_ABI_VERSION {tessera.ABI_VERSION}" in header
    statuses = {m: int(v) for m, v in re.findall(r"TESSERA_STATUS_(\w+) = (\d+)", header)}
    assert statuses == {s.name: s.value for s in tessera.Status}
    reasons = {m: int(v) for m, v in re.findall(r"TESSERA_REASON_(\w+) = (\d+)", header)}
    assert reasons == {r.name: r.value for r in tessera.Reason}
    for reason, library_name in tessera.reasons():
        assert reason.name == library_name
        assert reason.explanation and reason.explanation != reason.name


def test_online_activation_then_local_checks(server: Server, machine) -> None:
    lic = make_license(server)
    agent = machine(server, lic, app_version="pytest 1.0")
    assert not agent.activated
    before = agent.check("export_pdf")
    assert not before and before.reason is tessera.Reason.NOT_ACTIVATED
    with pytest.raises(tessera.FeatureDenied) as denied:
        agent.require("export_pdf")
    assert denied.value.reason is tessera.Reason.NOT_ACTIVATED
    assert not isinstance(denied.value, OSError), "an application's `except OSError` cannot swallow a denial"
    assert "activate" in str(denied.value).lower()

    outcome = agent.activate(lic.key)
    assert outcome["license_id"] == lic.license_id
    assert outcome["activation_id"]
    assert agent.activated

    pdf = agent.require("export_pdf")
    assert pdf.allowed and pdf.reason is tessera.Reason.VALID
    now = datetime.now(timezone.utc)
    assert pdf.expires_at is not None and pdf.expires_at > now + timedelta(days=364)
    assert pdf.lease_expires_at is not None and now < pdf.lease_expires_at <= now + timedelta(hours=1, minutes=1)
    assert pdf.limit is None and pdf.used is None and pdf.remaining is None

    calls = agent.check("api_calls")
    assert calls and (calls.limit, calls.used, calls.remaining) == (100, 0, 100)
    disabled = agent.check("beta_lab")
    assert not disabled and disabled.reason is tessera.Reason.FEATURE_DISABLED
    missing = agent.check("teleport")
    assert not missing and missing.reason is tessera.Reason.NOT_ENTITLED
    assert agent.check_license().reason is tessera.Reason.VALID

    status = agent.status()
    assert status["activated"] and status["activation_id"] == outcome["activation_id"]
    assert status["license"]["id"] == lic.license_id


def test_quota_use_reaches_the_server_once(server: Server, machine) -> None:
    lic = make_license(server)
    agent = machine(server, lic)
    agent.activate(lic.key)

    used = agent.consume("api_calls", 3)
    assert used and (used.used, used.remaining, used.limit) == (3, 97, 100)
    beat = agent.heartbeat()
    assert beat["usage_acknowledged"] == 1 and beat["activation_status"] == "ACTIVE"
    assert server.usage_on_server(lic.license_id, "api_calls") == 3
    again = agent.heartbeat()
    assert again["usage_sent"] == 0
    assert server.usage_on_server(lic.license_id, "api_calls") == 3, "a second heartbeat counts nothing again"

    # More than is left is refused whole, and nothing is recorded; what is left can be used to the last unit.
    too_much = agent.consume("api_calls", 98)
    assert not too_much and too_much.reason is tessera.Reason.QUOTA_EXCEEDED
    assert (too_much.used, too_much.remaining) == (3, 97)
    assert agent.consume("api_calls", 97).remaining == 0
    assert agent.consume("api_calls", 1).reason is tessera.Reason.QUOTA_EXCEEDED
    agent.heartbeat()
    assert server.usage_on_server(lic.license_id, "api_calls") == 100


def test_checks_keep_working_with_the_server_stopped(own_server: Server, machine, tmp_path: Path) -> None:
    lic = make_license(own_server)
    state = tmp_path / "laptop.db"
    agent = machine(own_server, lic, state_path=state, pinned_identity="py-laptop")
    agent.activate(lic.key)
    agent.consume("api_calls", 2)
    agent.close()

    own_server.stop()
    # The application starts again on a plane: the signed cache answers, the use is kept for later.
    agent = machine(own_server, lic, state_path=state, pinned_identity="py-laptop")
    assert agent.check("export_pdf").reason is tessera.Reason.VALID
    assert agent.consume("api_calls", 1).used == 3
    with pytest.raises(tessera.Unreachable) as unreachable:
        agent.heartbeat()
    assert isinstance(unreachable.value, ConnectionError)
    assert unreachable.value.status is tessera.Status.UNREACHABLE
    assert agent.check("export_pdf"), "a failed heartbeat does not take the license away"

    own_server.start()
    assert agent.heartbeat()["usage_acknowledged"] == 2
    assert own_server.usage_on_server(lic.license_id, "api_calls") == 3


def test_background_heartbeats_send_usage_while_the_agent_is_open(server: Server, machine, tmp_path: Path) -> None:
    lic = make_license(server)
    state = tmp_path / "worker.db"
    first = machine(server, lic, state_path=state, pinned_identity="py-worker")
    first.activate(lic.key)
    first.consume("api_calls", 4)
    first.close()
    with tessera.Agent(
        state,
        keyset=server.keyset,
        product_id=lic.product_id,
        server_url=server.url,
        pinned_identity="py-worker",
        background_heartbeats=True,
    ) as agent:
        deadline = time.monotonic() + 20
        while server.usage_on_server(lic.license_id, "api_calls") != 4:
            assert time.monotonic() < deadline, "the background heartbeat did not send the usage"
            time.sleep(0.05)
        assert agent.check("export_pdf")
    assert agent.closed


def test_request_and_response_codes(server: Server, machine) -> None:
    lic = make_license(server)
    agent = machine(server, lic, online=False)
    with pytest.raises(tessera.NoServer):
        agent.activate(lic.key)

    request = agent.request_code(lic.key)
    assert request.startswith("REQ1-")
    answer = server.ok("/v1/offline/respond", lic.token, {"request_code": request})
    response = answer["response_code"]
    assert answer["summary"]["license_id"] == lic.license_id and answer["summary"]["seats_used"] == 1

    # One mistyped character is caught by the code's checksum, and the error says which group to compare.
    groups = response.split("-")
    groups[3] = ("0" if groups[3][0] != "0" else "1") + groups[3][1:]
    with pytest.raises(tessera.BadCode) as typo:
        agent.apply_code("-".join(groups))
    assert "group" in typo.value.message and "compare" in typo.value.message
    assert not agent.activated, "a mistyped code changes nothing"

    applied = agent.apply_code(response)
    assert applied["kind"] == "activation" and applied["license_id"] == lic.license_id
    assert agent.check("export_pdf").reason is tessera.Reason.VALID
    assert agent.consume("api_calls", 5).remaining == 95

    receipt = agent.deactivate_offline()
    assert receipt.startswith("RCT2-")
    assert agent.check("export_pdf").reason is tessera.Reason.NOT_ACTIVATED
    freed = server.ok("/v1/offline/receipt", lic.token, {"receipt_code": receipt})
    assert freed["license_id"] == lic.license_id and freed["activation_id"]


def test_a_full_license_refuses_with_the_server_s_code(server: Server, machine) -> None:
    lic = make_license(server, max_activations=1)
    machine(server, lic).activate(lic.key)
    second = machine(server, lic)
    with pytest.raises(tessera.ServerRefused) as refused:
        second.activate(lic.key)
    assert refused.value.server_code == "SEAT_LIMIT_REACHED"
    assert "SEAT_LIMIT_REACHED" in str(refused.value)
    assert not second.check("export_pdf")


def test_a_state_copied_to_another_machine_does_not_unlock_it(server: Server, machine, tmp_path: Path) -> None:
    lic = make_license(server)
    state = tmp_path / "original.db"
    original = machine(server, lic, state_path=state, pinned_identity="py-original")
    original.activate(lic.key)
    original.close()  # everything is in the one file now (no write-ahead log beside it)
    copy = tmp_path / "copy.db"
    copy.write_bytes(state.read_bytes())
    other = machine(server, lic, state_path=copy, pinned_identity="py-somebody-else")
    decision = other.check("export_pdf")
    assert not decision and decision.reason is tessera.Reason.FINGERPRINT_MISMATCH


def test_a_keyset_of_the_customer_s_own_does_not_accept_the_vendor_s_license(server: Server, machine, tmp_path: Path) -> None:
    lic = make_license(server)
    state = tmp_path / "mine.db"
    vendor = machine(server, lic, state_path=state, pinned_identity="py-own-keys")
    vendor.activate(lic.key)
    vendor.close()
    # The repository's test keyset is another vendor's key (not this server's).
    foreign = (HERE.parent.parent.parent / "keys" / "test" / "keyset.json").read_text()
    agent = machine(None, lic, state_path=state, pinned_identity="py-own-keys", keyset=foreign)
    decision = agent.check("export_pdf")
    assert not decision and decision.reason is tessera.Reason.SIGNATURE_INVALID, decision


def test_a_build_newer_than_the_maintenance_window_is_denied(server: Server, machine) -> None:
    lic = make_license(server, license_type="PERPETUAL", duration_days=None, maintenance_days=30)
    now = datetime.now(timezone.utc)
    covered = machine(server, lic, build_date=now - timedelta(days=1))
    covered.activate(lic.key)
    assert covered.check("export_pdf").reason is tessera.Reason.VALID
    newer = machine(server, lic, build_date=now + timedelta(days=60))
    newer.activate(lic.key)
    decision = newer.check("export_pdf")
    assert not decision and decision.reason is tessera.Reason.MAINTENANCE_EXPIRED, decision
    assert decision.expires_at is None, "a perpetual license has no end"
    with pytest.raises(tessera.InvalidArgument, match="aware datetime"):
        machine(server, lic, build_date=datetime(2026, 1, 1))


def test_many_threads_never_overdraw_a_quota(server: Server, machine) -> None:
    lic = make_license(server)
    agent = machine(server, lic)
    agent.activate(lic.key)
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            if agent.consume("api_calls", 1):
                with lock:
                    granted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 100
    assert agent.check("api_calls").remaining == 0


def test_bad_input_is_refused_with_a_message(server: Server, machine, tmp_path: Path) -> None:
    lic = make_license(server)
    with pytest.raises(tessera.InvalidArgument, match="keyset"):
        machine(server, lic, keyset="not a keyset")
    with pytest.raises(tessera.InvalidArgument, match="UUID"):
        machine(server, lic, product_id="not-a-uuid")
    with pytest.raises(tessera.InvalidArgument, match="NUL"):
        machine(server, lic, app_version="1.0\0evil")
    for tolerance in (-5, 2**64, True, 1.5):
        with pytest.raises(tessera.InvalidArgument, match="clock_tolerance"):
            machine(server, lic, clock_tolerance_secs=tolerance)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(tessera.StateError):
        machine(server, lic, state_path=tmp_path / "a-file" / "state.db")

    agent = machine(server, lic)
    with pytest.raises(tessera.BadKey, match="license key"):
        agent.activate("TSK-NOPE-NOPE-NOPE-NOPE")
    with pytest.raises(tessera.BadKey):
        agent.request_code("")
    with pytest.raises(tessera.BadCode):
        agent.apply_code("RSP1-HELLO")
    with pytest.raises(tessera.InvalidArgument):
        agent.consume("api_calls", 0)
    with pytest.raises(tessera.InvalidArgument):
        agent.consume("api_calls", -1)
    with pytest.raises(tessera.InvalidArgument):
        agent.consume("api_calls", 2**63)
    with pytest.raises(tessera.InvalidArgument, match="NUL"):
        agent.check("export\0pdf")
    with pytest.raises(tessera.NotActivated):
        agent.deactivate_offline()
    assert not agent.activated, "nothing above activated or changed the machine"

    agent.close()
    agent.close()  # twice is harmless
    with pytest.raises(tessera.InvalidArgument, match="closed"):
        agent.check("export_pdf")


def _package_copy(where: Path, *, with_library: bool) -> Path:
    """This package's Python files in ``where``, with or without the library inside, as a wheel would hold them."""
    source = Path(tessera.__file__).resolve().parent
    target = where / "tessera"
    target.mkdir(parents=True)
    for part in ("__init__.py", "_native.py"):
        shutil.copy(source / part, target / part)
    if with_library:
        shutil.copy(tessera._native.find_library(), target / "libtessera.so")
    return where


def _python(code: str, path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(path), **env}, capture_output=True, text=True, cwd=path
    )


def test_a_missing_library_is_a_clear_error(tmp_path: Path) -> None:
    bare = _package_copy(tmp_path / "bare", with_library=False)
    code = "import tessera; tessera.Agent('x.db', keyset='{}', product_id='0')"
    out = _python(code, bare, TESSERA_LIBRARY=str(tmp_path / "nothing.so"))
    assert out.returncode != 0
    assert "TESSERA_LIBRARY" in out.stderr and "is not a file" in out.stderr
    out = _python(code, bare)
    assert out.returncode != 0 and "libtessera was not found" in out.stderr, out.stderr


def test_the_environment_cannot_swap_the_bundled_library(tmp_path: Path) -> None:
    # A customer's own "library" that would answer every check with allowed: with a bundled copy, it is never loaded.
    stub = tmp_path / "libtessera-always-yes.so"
    stub.write_bytes(b"not a library the package will ever load")
    package = _package_copy(tmp_path / "shipped", with_library=True)
    code = "import tessera; from tessera import _native; print(_native.find_library()); print(tessera.ABI_VERSION)"
    out = _python(code + "; print(list(tessera.reasons())[0][1])", package, TESSERA_LIBRARY=str(stub))
    assert out.returncode == 0, out.stderr
    found, _, first_reason = out.stdout.splitlines()
    assert Path(found) == package / "tessera" / "libtessera.so"
    assert first_reason == "VALID", "the bundled library answered"


def test_the_example_gates_a_feature(own_server: Server, tmp_path: Path) -> None:
    lic = make_license(own_server)
    (tmp_path / "keyset.py").write_text(f"KEYSET = {own_server.keyset.strip()!r}\n")
    example = HERE.parent / "examples" / "gate.py"
    env = {**os.environ, "PYTHONPATH": ":".join([str(tmp_path), *sys.path])}
    state = str(tmp_path / "app.db")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(example), *args], env=env, capture_output=True, text=True)

    online = run(state, lic.product_id, own_server.url, lic.key)
    assert online.returncode == 0, online.stderr
    assert "activated: activation " in online.stdout
    assert "export_pdf: allowed (VALID)" in online.stdout
    assert "api_calls: recorded (VALID), 3 used of 100, 97 left" in online.stdout
    assert "heartbeat: 1 use(s) acknowledged" in online.stdout

    bad = run(str(tmp_path / "other.db"), lic.product_id, own_server.url, "TSK-NOPE-NOPE-NOPE-NOPE")
    assert bad.returncode == 2 and bad.stderr.startswith("failed (BAD_KEY)"), bad.stderr

    own_server.stop()
    offline = run(state, lic.product_id, own_server.url)
    assert offline.returncode == 0, offline.stderr
    assert "api_calls: recorded (VALID), 6 used of 100, 94 left" in offline.stdout
    assert "heartbeat: server unreachable, working offline" in offline.stdout
