"""Tessera's agent inside a Python application.

The application gives the vendor's public keyset from its own code (not from a file the customer could swap),
opens an :class:`Agent` on a state file, activates once, and checks features locally, with no network::

    import tessera

    with tessera.Agent("app-license.db", keyset=KEYSET, product_id=PRODUCT, server_url=URL) as agent:
        if not agent.activated:
            agent.activate(key)
        decision = agent.check("export_pdf")
        if decision:
            export_pdf()
        else:
            print(decision.explanation)

A check never raises for a denied feature: a :class:`Decision` is falsy, with its :class:`Reason`. Use
:meth:`Agent.require` to raise :class:`FeatureDenied` instead. Operations that can fail (activation, codes,
heartbeats) raise a :class:`TesseraError` subclass that carries the library's status, its message (what went
wrong and what to do) and, for a server refusal, the server's stable code (e.g. ``SEAT_LIMIT_REACHED``).

The binding is ctypes over libtessera (the C ABI in ``ffi/``); the library is found through ``$TESSERA_LIBRARY``,
then inside this package, then on the system's library path.
"""

from __future__ import annotations

import ctypes
import enum
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from . import _native

__all__ = [
    "ABI_VERSION",
    "Agent",
    "BadCode",
    "BadKey",
    "ConfigError",
    "Decision",
    "FeatureDenied",
    "IdentityError",
    "InternalError",
    "InvalidArgument",
    "NoServer",
    "NotActivated",
    "Reason",
    "Refused",
    "ServerRefused",
    "StateError",
    "Status",
    "TesseraError",
    "Unreachable",
    "UntrustedResponse",
]

ABI_VERSION = _native.ABI_VERSION

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                _lib = _native.load()
    return _lib


class Status(enum.IntEnum):
    """What a library call did (``TesseraStatus``)."""

    OK = 0
    INVALID_ARGUMENT = 1
    STATE = 2
    NO_SERVER = 3
    UNREACHABLE = 4
    SERVER_REFUSED = 5
    UNTRUSTED_RESPONSE = 6
    BAD_KEY = 7
    BAD_CODE = 8
    NOT_ACTIVATED = 9
    IDENTITY = 10
    REFUSED = 11
    CONFIG = 12
    INTERNAL = 13


class Reason(enum.IntEnum):
    """Why a check allowed or denied (``TesseraReason``); ``name`` is the stable code the server and agent use."""

    VALID = 0
    IN_GRACE = 1
    EMERGENCY_ACCESS = 2
    NOT_ACTIVATED = 3
    SIGNATURE_INVALID = 4
    CLOCK_TAMPERED = 5
    REVOKED = 6
    SUSPENDED = 7
    EXPIRED = 8
    NOT_YET_VALID = 9
    FINGERPRINT_MISMATCH = 10
    LEASE_EXPIRED = 11
    RESTRICTED = 12
    MAINTENANCE_EXPIRED = 13
    NOT_ENTITLED = 14
    FEATURE_DISABLED = 15
    FEATURE_EXPIRED = 16
    QUOTA_EXCEEDED = 17
    HARDWARE_EXCEEDS_LICENSE = 18

    @property
    def explanation(self) -> str:
        """One sentence for people: what happened and what to do."""
        text = _library().tessera_reason_explain(int(self))
        return text.decode("utf-8") if text else self.name


class TesseraError(Exception):
    """A library call failed. ``status`` says how, ``message`` what to do, ``server_code`` why the server refused."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str, server_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server_code = server_code

    def __str__(self) -> str:
        code = f" [{self.server_code}]" if self.server_code else ""
        return f"{self.message}{code}"


class InvalidArgument(TesseraError, ValueError):
    status = Status.INVALID_ARGUMENT


class StateError(TesseraError):
    status = Status.STATE


class NoServer(TesseraError):
    status = Status.NO_SERVER


class Unreachable(TesseraError, ConnectionError):
    status = Status.UNREACHABLE


class ServerRefused(TesseraError):
    status = Status.SERVER_REFUSED


class UntrustedResponse(TesseraError):
    status = Status.UNTRUSTED_RESPONSE


class BadKey(TesseraError, ValueError):
    status = Status.BAD_KEY


class BadCode(TesseraError, ValueError):
    status = Status.BAD_CODE


class NotActivated(TesseraError):
    status = Status.NOT_ACTIVATED


class IdentityError(TesseraError):
    status = Status.IDENTITY


class Refused(TesseraError):
    status = Status.REFUSED


class ConfigError(TesseraError):
    status = Status.CONFIG


class InternalError(TesseraError):
    status = Status.INTERNAL


_ERRORS: dict[int, type[TesseraError]] = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        StateError,
        NoServer,
        Unreachable,
        ServerRefused,
        UntrustedResponse,
        BadKey,
        BadCode,
        NotActivated,
        IdentityError,
        Refused,
        ConfigError,
        InternalError,
    )
}


def _raise_for(lib: ctypes.CDLL, status: int) -> None:
    """Raises the error a non-OK status stands for, with the calling thread's message and server code."""
    if status == Status.OK:
        return
    message = lib.tessera_last_error()
    code = lib.tessera_last_server_code()
    cls = _ERRORS.get(status, InternalError)
    text = message.decode("utf-8") if message else f"libtessera returned status {status}"
    raise cls(text, server_code=code.decode("utf-8") if code else None)


def _time(unix: int) -> datetime | None:
    return datetime.fromtimestamp(unix, tz=timezone.utc) if unix else None


def _count(n: int) -> int | None:
    return None if n < 0 else n


@dataclass(frozen=True)
class Decision:
    """A check's answer. Truthy when allowed. Times are aware UTC datetimes (None: the license has none)."""

    feature: str | None
    allowed: bool
    reason: Reason
    expires_at: datetime | None
    grace_ends_at: datetime | None
    lease_expires_at: datetime | None
    feature_expires_at: datetime | None
    emergency_expires_at: datetime | None
    limit: int | None
    """The feature's quota (None: unlimited or not metered)."""
    used: int | None
    """Units used so far (None: not metered)."""
    remaining: int | None
    """Units left (None: unlimited or not metered)."""

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def explanation(self) -> str:
        """One sentence for people about the reason: what happened and what to do."""
        return self.reason.explanation

    @classmethod
    def _from_raw(cls, feature: str | None, raw: _native.RawDecision) -> Decision:
        return cls(
            feature=feature,
            allowed=bool(raw.allowed),
            reason=Reason(raw.reason),
            expires_at=_time(raw.expires_at),
            grace_ends_at=_time(raw.grace_ends_at),
            lease_expires_at=_time(raw.lease_expires_at),
            feature_expires_at=_time(raw.feature_expires_at),
            emergency_expires_at=_time(raw.emergency_expires_at),
            limit=_count(raw.limit),
            used=_count(raw.used),
            remaining=_count(raw.remaining),
        )


class FeatureDenied(PermissionError):
    """:meth:`Agent.require` was denied: ``reason`` says why, ``decision`` holds the whole answer.

    Not a :class:`TesseraError`: the library worked, the license said no.
    """

    def __init__(self, decision: Decision) -> None:
        what = f"{decision.feature!r} is denied" if decision.feature else "the license is not usable"
        super().__init__(f"{what} ({decision.reason.name}): {decision.explanation}")
        self.decision = decision
        self.reason = decision.reason


def _c(text: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if text is None:
        return None
    s = os.fspath(text)
    if "\0" in s:
        raise InvalidArgument(f"{what} holds a NUL character: pass plain text")
    return s.encode("utf-8")


class Agent:
    """An open agent on one state file: thread-safe, closed by :meth:`close` or a ``with`` block.

    ``keyset`` is the vendor's public keyset, the JSON ``tessera-server keys export`` prints, as ``str``,
    ``bytes`` or a parsed ``dict``: keep it in the application's code. ``server_url`` None means offline only
    (request and response codes). ``pinned_identity`` replaces the hardware fingerprint (containers; the
    license's policy must allow it). With ``background_heartbeats`` the agent renews its lease and sends usage from
    a thread it owns while open.
    """

    def __init__(
        self,
        state_path: str | os.PathLike[str],
        *,
        keyset: str | bytes | dict[str, Any],
        product_id: str,
        server_url: str | None = None,
        app_version: str | None = None,
        user_id: str | None = None,
        pinned_identity: str | None = None,
        clock_tolerance_secs: int = 0,
        background_heartbeats: bool = False,
    ) -> None:
        self._lib = _library()
        if isinstance(keyset, dict):
            keyset = json.dumps(keyset)
        if isinstance(keyset, bytes):
            keyset = keyset.decode("utf-8")
        if not isinstance(clock_tolerance_secs, int) or clock_tolerance_secs < 0:
            raise InvalidArgument("clock_tolerance_secs must be a whole number of seconds, 0 or more (0: one hour)")
        self._strings = (  # kept alive for the call; the library copies what it keeps
            _c(state_path, "state_path"),
            _c(keyset, "keyset"),
            _c(str(product_id), "product_id"),
            _c(server_url, "server_url"),
            _c(app_version, "app_version"),
            _c(user_id, "user_id"),
            _c(pinned_identity, "pinned_identity"),
        )
        options = _native.Options(ABI_VERSION, *self._strings, clock_tolerance_secs, bool(background_heartbeats))
        handle = ctypes.c_void_p()
        _raise_for(self._lib, self._lib.tessera_open(ctypes.byref(options), ctypes.byref(handle)))
        self._handle: int | None = handle.value
        # Calls may run on many threads at once (the library allows it); close waits for them to end.
        self._calls = 0
        self._idle = threading.Condition()

    # -- lifetime ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stops background heartbeats and frees the agent. Calls after it raise; closing twice is harmless."""
        with self._idle:
            handle, self._handle = self._handle, None
            while self._calls:
                self._idle.wait()
        if handle:
            self._lib.tessera_close(handle)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # An agent dropped without close() still frees its handle (not at interpreter exit, when ctypes may be gone).
        if getattr(self, "_handle", None):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - nothing can be reported from a finaliser
                pass

    @property
    def closed(self) -> bool:
        return self._handle is None

    def _enter(self) -> int:
        with self._idle:
            if self._handle is None:
                raise InvalidArgument("the agent is closed: open a new tessera.Agent")
            self._calls += 1
            return self._handle

    def _leave(self) -> None:
        with self._idle:
            self._calls -= 1
            if not self._calls:
                self._idle.notify_all()

    def _call(self, fn: Any, *args: Any) -> None:
        handle = self._enter()
        try:
            _raise_for(self._lib, fn(handle, *args))
        finally:
            self._leave()

    def _call_string(self, fn: Any, *args: Any) -> str | None:
        out = ctypes.c_void_p()
        handle = self._enter()
        try:
            status = fn(handle, *args, ctypes.byref(out))
            text = _native.take_string(self._lib, out)
            _raise_for(self._lib, status)
            return text
        finally:
            self._leave()

    # -- local checks (no network) ----------------------------------------------------------------------------------

    def check(self, feature: str) -> Decision:
        """Is ``feature`` licensed here, now? Local, with no network; never raises for a denial."""
        raw = _native.RawDecision()
        self._call(self._lib.tessera_check, _c(feature, "feature"), ctypes.byref(raw))
        return Decision._from_raw(feature, raw)

    def require(self, feature: str) -> Decision:
        """As :meth:`check`, but raises :class:`FeatureDenied` (with the reason) when the feature is denied."""
        decision = self.check(feature)
        if not decision:
            raise FeatureDenied(decision)
        return decision

    def check_license(self) -> Decision:
        """Is the license as a whole usable here (no feature)?"""
        raw = _native.RawDecision()
        self._call(self._lib.tessera_check_license, ctypes.byref(raw))
        return Decision._from_raw(None, raw)

    def consume(self, feature: str, amount: int = 1) -> Decision:
        """Records ``amount`` units of a metered feature if its quota allows; a denied decision records nothing.

        The use reaches the server with the next heartbeat, once.
        """
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount < 2**63:
            raise InvalidArgument(f"amount must be a whole number of units from 1 to 2^63-1, not {amount!r}")
        raw = _native.RawDecision()
        self._call(self._lib.tessera_consume, _c(feature, "feature"), amount, ctypes.byref(raw))
        return Decision._from_raw(feature, raw)

    def status(self) -> dict[str, Any]:
        """The agent's state (activation, license terms, lease, usage, what is wrong and what to do)."""
        return json.loads(self._call_string(self._lib.tessera_status) or "{}")

    @property
    def activated(self) -> bool:
        return bool(self.status().get("activated"))

    # -- online -----------------------------------------------------------------------------------------------------

    def activate(self, key: str) -> dict[str, Any]:
        """Activates this machine online with a license key; returns the outcome (``activation_id``, ...)."""
        return json.loads(self._call_string(self._lib.tessera_activate, _c(key, "key")) or "{}")

    def heartbeat(self) -> dict[str, Any]:
        """Renews the lease and sends pending usage now. Raises :class:`Unreachable` when offline (checks go on)."""
        return json.loads(self._call_string(self._lib.tessera_heartbeat) or "{}")

    def deactivate(self) -> None:
        """Frees this machine's seat on the server and removes the local license."""
        self._call(self._lib.tessera_deactivate)

    # -- offline ----------------------------------------------------------------------------------------------------

    def request_code(self, key: str) -> str:
        """An offline request code for ``key``, to carry to the vendor (``REQ1-...``)."""
        return self._call_string(self._lib.tessera_request_code, _c(key, "key")) or ""

    def apply_code(self, code: str) -> dict[str, Any]:
        """Applies a response code or an emergency code; returns what it granted (``kind``: activation/emergency)."""
        return json.loads(self._call_string(self._lib.tessera_apply_code, _c(code, "code")) or "{}")

    def deactivate_offline(self) -> str:
        """Removes the local license and returns the signed receipt (``RCT2-...``) the vendor needs to free the seat."""
        return self._call_string(self._lib.tessera_deactivate_offline) or ""


def reasons() -> Iterator[tuple[Reason, str]]:
    """Every reason with the library's own name for it (to check this package and the library agree)."""
    lib = _library()
    for r in Reason:
        name = lib.tessera_reason_name(int(r))
        yield r, name.decode() if name else ""
