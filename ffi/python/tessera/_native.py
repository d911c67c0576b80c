"""The ctypes binding of libtessera's C ABI (ffi/include/tessera.h), version 1.

Everything unsafe about talking to C lives here: the struct layouts, the argument and result types of each
function, and the ownership of returned strings (every ``char *`` the library returns is freed with
``tessera_string_free`` before the Python string is handed on).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

ABI_VERSION = 1


class Options(ctypes.Structure):
    """``TesseraOptions``."""

    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("state_path", ctypes.c_char_p),
        ("keyset_json", ctypes.c_char_p),
        ("product_id", ctypes.c_char_p),
        ("server_url", ctypes.c_char_p),
        ("app_version", ctypes.c_char_p),
        ("user_id", ctypes.c_char_p),
        ("pinned_identity", ctypes.c_char_p),
        ("clock_tolerance_secs", ctypes.c_int64),
        ("background_heartbeats", ctypes.c_uint8),
        ("build_date", ctypes.c_int64),
    ]


class RawDecision(ctypes.Structure):
    """``TesseraDecision`` (the C enum ``reason`` is an ``int``)."""

    _fields_ = [
        ("allowed", ctypes.c_bool),
        ("reason", ctypes.c_int),
        ("expires_at", ctypes.c_int64),
        ("grace_ends_at", ctypes.c_int64),
        ("lease_expires_at", ctypes.c_int64),
        ("feature_expires_at", ctypes.c_int64),
        ("emergency_expires_at", ctypes.c_int64),
        ("limit", ctypes.c_int64),
        ("used", ctypes.c_int64),
        ("remaining", ctypes.c_int64),
    ]


def _library_names() -> list[str]:
    if sys.platform == "darwin":
        return ["libtessera.dylib"]
    if sys.platform == "win32":
        return ["tessera.dll"]
    return ["libtessera.so"]


def find_library() -> str:
    """Where libtessera is: the copy inside this package; else ``$TESSERA_LIBRARY``; else the system's.

    The bundled copy comes first and the environment cannot replace it: a customer who could point the package at
    a library of their own would answer every check with "allowed". ``$TESSERA_LIBRARY`` serves a package without
    a bundled library (development, a source checkout).
    """
    here = Path(__file__).resolve().parent
    for name in _library_names():
        if (here / name).is_file():
            return str(here / name)
    explicit = os.environ.get("TESSERA_LIBRARY")
    if explicit:
        if not Path(explicit).is_file():
            raise OSError(f"TESSERA_LIBRARY={explicit} is not a file: point it at libtessera (cargo build -p tessera-ffi)")
        return explicit
    found = ctypes.util.find_library("tessera")
    if found:
        return found
    raise OSError(
        "libtessera was not found: build it (cargo build --release -p tessera-ffi), then put it inside the "
        "tessera package, on the system's library path, or in TESSERA_LIBRARY"
    )


_P = ctypes.c_void_p
_S = ctypes.c_char_p
_OUT_S = ctypes.POINTER(ctypes.c_void_p)  # char **: kept as a raw pointer so it can be freed


def load(path: str | None = None) -> ctypes.CDLL:
    lib = ctypes.CDLL(path or find_library())
    signatures = {
        "tessera_abi_version": ([], ctypes.c_uint32),
        "tessera_open": ([ctypes.POINTER(Options), ctypes.POINTER(_P)], ctypes.c_int),
        "tessera_close": ([_P], None),
        "tessera_check": ([_P, _S, ctypes.POINTER(RawDecision)], ctypes.c_int),
        "tessera_check_license": ([_P, ctypes.POINTER(RawDecision)], ctypes.c_int),
        "tessera_consume": ([_P, _S, ctypes.c_uint64, ctypes.POINTER(RawDecision)], ctypes.c_int),
        "tessera_activate": ([_P, _S, _OUT_S], ctypes.c_int),
        "tessera_heartbeat": ([_P, _OUT_S], ctypes.c_int),
        "tessera_deactivate": ([_P], ctypes.c_int),
        "tessera_request_code": ([_P, _S, _OUT_S], ctypes.c_int),
        "tessera_apply_code": ([_P, _S, _OUT_S], ctypes.c_int),
        "tessera_deactivate_offline": ([_P, _OUT_S], ctypes.c_int),
        "tessera_status": ([_P, _OUT_S], ctypes.c_int),
        "tessera_string_free": ([ctypes.c_void_p], None),
        "tessera_last_error": ([], _S),
        "tessera_last_server_code": ([], _S),
        "tessera_reason_name": ([ctypes.c_int32], _S),
        "tessera_reason_explain": ([ctypes.c_int32], _S),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = result
    version = lib.tessera_abi_version()
    if version != ABI_VERSION:
        raise OSError(
            f"{path or find_library()} implements libtessera ABI {version}; this package speaks ABI {ABI_VERSION}: "
            "install the package that came with this library"
        )
    return lib


def take_string(lib: ctypes.CDLL, p: ctypes.c_void_p) -> str | None:
    """The library's string at ``p`` as Python text, and the C copy freed."""
    if not p.value:
        return None
    try:
        return ctypes.string_at(p.value).decode("utf-8")
    finally:
        lib.tessera_string_free(p.value)
