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

The binding is ctypes over libtessera (the C ABI in ``ffi/``); the library is the copy inside this package, else
``$TESSERA_LIBRARY`` (a package without one: development), else the system's. Open agents after ``fork()``
(multiprocessing, pre-forking servers), not before: a handle does not survive into a child process.
"""

from __future__ import annotations

import ctypes
import enum
import json
import os
import sys
import threading
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


def _error_for(lib: ctypes.CDLL, status: int) -> TesseraError | None:
    """The error a non-OK status stands for, with the calling thread's message and server code.

    Read at once after the call: the message lasts until this thread's next call into the library.
    """
    if status == Status.OK:
        return None
    message = lib.tessera_last_error()
    code = lib.tessera_last_server_code()
    cls = _ERRORS.get(status, InternalError)
    text = message.decode("utf-8") if message else f"libtessera returned status {status}"
    return cls(text, server_code=code.decode("utf-8") if code else None)


def _raise_for(lib: ctypes.CDLL, status: int) -> None:
    error = _error_for(lib, status)
    if error is not None:
        raise error


_LATEST = datetime.max.replace(tzinfo=timezone.utc)


def _time(unix: int) -> datetime | None:
    if not unix:
        return None
    try:
        return datetime.fromtimestamp(unix, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):  # past year 9999: as good as never
        return _LATEST if unix > 0 else datetime.min.replace(tzinfo=timezone.utc)


def _count(n: int) -> int | None:
    return None if n < 0 else n


class Decision:
    """A check's answer. Truthy when allowed. Immutable.

    Times are aware UTC datetimes (None: the license has none); counts are ints (None: not metered, or no limit).
    The answer is kept as the library wrote it and each fact is converted when read, so a check that only asks
    "allowed?" pays for nothing else.
    """

    __slots__ = ("feature", "_raw")
    feature: str | None
    _raw: _native.RawDecision

    def __init__(self, feature: str | None, raw: _native.RawDecision) -> None:
        object.__setattr__(self, "feature", feature)
        object.__setattr__(self, "_raw", raw)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Decision is immutable; {name} cannot be set")

    def __bool__(self) -> bool:
        return bool(self._raw.allowed)

    @property
    def allowed(self) -> bool:
        return bool(self._raw.allowed)

    @property
    def reason(self) -> Reason:
        code = self._raw.reason
        return _REASONS[code] if 0 <= code < len(_REASONS) else Reason(code)

    @property
    def explanation(self) -> str:
        """One sentence for people about the reason: what happened and what to do."""
        return self.reason.explanation

    @property
    def expires_at(self) -> datetime | None:
        return _time(self._raw.expires_at)

    @property
    def grace_ends_at(self) -> datetime | None:
        return _time(self._raw.grace_ends_at)

    @property
    def lease_expires_at(self) -> datetime | None:
        return _time(self._raw.lease_expires_at)

    @property
    def feature_expires_at(self) -> datetime | None:
        return _time(self._raw.feature_expires_at)

    @property
    def emergency_expires_at(self) -> datetime | None:
        return _time(self._raw.emergency_expires_at)

    @property
    def limit(self) -> int | None:
        """The feature's quota (None: unlimited or not metered)."""
        return _count(self._raw.limit)

    @property
    def used(self) -> int | None:
        """Units used so far (None: not metered)."""
        return _count(self._raw.used)

    @property
    def remaining(self) -> int | None:
        """Units left (None: unlimited or not metered)."""
        return _count(self._raw.remaining)

    _FACTS = (
        "allowed",
        "reason",
        "expires_at",
        "grace_ends_at",
        "lease_expires_at",
        "feature_expires_at",
        "emergency_expires_at",
        "limit",
        "used",
        "remaining",
    )

    def _key(self) -> tuple[object, ...]:
        return (self.feature, *(getattr(self, f) for f in self._FACTS))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        facts = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FACTS if getattr(self, f) is not None)
        return f"Decision(feature={self.feature!r}, {facts})"


_REASONS = tuple(Reason)  # by value: the library's codes run 0, 1, 2, ...
_byref = ctypes.byref


class FeatureDenied(Exception):
    """:meth:`Agent.require` was denied: ``reason`` says why, ``decision`` holds the whole answer.

    Not a :class:`TesseraError` (the library worked, the license said no), and not an ``OSError``, so that an
    application's ``except OSError`` around its own file work cannot swallow a denial.
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
    a thread it owns while open. ``build_date`` (an aware datetime: when this build of the application was made)
    enforces a perpetual license's maintenance window: a build newer than it is denied with MAINTENANCE_EXPIRED.
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
        build_date: datetime | None = None,
    ) -> None:
        # Set first, so that a failed open leaves an object that __del__ and close() handle.
        self._handle: int | None = None
        self._closing = False
        self._calls = 0  # calls in flight: the library allows many threads at once; close() waits for them
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._names: dict[str, bytes] = {}  # feature names as C strings, made once (bounded: see _name)
        self._lib = _library()
        self._check = self._lib.tessera_check
        if isinstance(keyset, dict):
            keyset = json.dumps(keyset)
        if isinstance(keyset, bytes):
            keyset = keyset.decode("utf-8")
        if (
            not isinstance(clock_tolerance_secs, int)
            or isinstance(clock_tolerance_secs, bool)
            or not 0 <= clock_tolerance_secs < 2**63
        ):
            raise InvalidArgument("clock_tolerance_secs must be a whole number of seconds, 0 or more (0: one hour)")
        built = 0
        if build_date is not None:
            if not isinstance(build_date, datetime) or build_date.tzinfo is None:
                raise InvalidArgument("build_date must be an aware datetime, e.g. datetime(2026, 5, 1, tzinfo=timezone.utc)")
            built = int(build_date.timestamp()) or 1
        strings = (  # alive for the call; the library copies what it keeps
            _c(state_path, "state_path"),
            _c(keyset, "keyset"),
            _c(str(product_id), "product_id"),
            _c(server_url, "server_url"),
            _c(app_version, "app_version"),
            _c(user_id, "user_id"),
            _c(pinned_identity, "pinned_identity"),
        )
        options = _native.Options(ABI_VERSION, *strings, clock_tolerance_secs, int(bool(background_heartbeats)), built)
        handle = ctypes.c_void_p()
        _raise_for(self._lib, self._lib.tessera_open(ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle.value

    # -- lifetime ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stops background heartbeats and frees the agent once the calls in flight have ended. Calls after it
        raise; closing twice is harmless."""
        with self._idle:
            self._closing = True  # no new call starts
            while self._calls:
                self._idle.wait()
            handle, self._handle = self._handle, None
        if handle:
            self._lib.tessera_close(handle)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # An agent dropped without close() still frees its handle. Not at interpreter exit (ctypes may be gone, and
        # a daemon thread stuck in a call would make close() wait forever); then the process's end frees it.
        if getattr(self, "_handle", None) and not sys.is_finalizing() and not self._calls:
            try:
                self.close()
            except Exception:  # noqa: BLE001 - nothing can be reported from a finaliser
                pass

    @property
    def closed(self) -> bool:
        return self._handle is None

    def _enter(self) -> int:
        with self._lock:
            if self._handle is None or self._closing:
                raise InvalidArgument("the agent is closed: open a new tessera.Agent")
            self._calls += 1
            return self._handle

    def _leave(self) -> None:
        with self._lock:
            self._calls -= 1
            if self._closing and not self._calls:
                self._idle.notify_all()

    def _name(self, feature: str) -> bytes:
        """A feature name as a C string; the first 1,024 names asked for are kept, so a check encodes nothing."""
        name = _c(feature, "feature")
        assert name is not None
        if type(feature) is str and len(self._names) < 1024:
            self._names[feature] = name
        return name

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
            error = _error_for(self._lib, status)  # before anything else can call into the library on this thread
            text = _native.take_string(self._lib, out)
            if error is not None:
                raise error
            return text
        finally:
            self._leave()

    # -- local checks (no network) ----------------------------------------------------------------------------------

    def check(self, feature: str) -> Decision:
        """Is ``feature`` licensed here, now? Local, with no network; never raises for a denial."""
        # The hot path, kept flat: a cached name, one struct, the call counted in and out, no other Python call.
        name = self._names.get(feature) or self._name(feature)
        raw = _native.RawDecision()
        handle = self._enter()
        try:
            status = self._check(handle, name, _byref(raw))
        finally:
            self._leave()
        if status:
            _raise_for(self._lib, status)
        return Decision(feature, raw)

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
        return Decision(None, raw)

    def consume(self, feature: str, amount: int = 1) -> Decision:
        """Records ``amount`` units of a metered feature if its quota allows; a denied decision records nothing.

        The use reaches the server with the next heartbeat, once. ``amount`` is 1 or more (to look without
        recording, use :meth:`check`, which reports ``used`` and ``remaining`` too).
        """
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount < 2**63:
            raise InvalidArgument(f"amount must be a whole number of units from 1 to 2^63-1, not {amount!r}")
        raw = _native.RawDecision()
        self._call(self._lib.tessera_consume, self._names.get(feature) or self._name(feature), amount, _byref(raw))
        return Decision(feature, raw)

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
