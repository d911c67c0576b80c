"""Timing harness: a feature check from Python on an activated state, beside same-run Python baselines.

    check_bench.py STATE KEYSET_JSON PRODUCT_ID PINNED_IDENTITY

Run by the criterion bench `cargo bench -p tessera-ffi --bench check` (with TESSERA_BENCH_PYTHON=1) on the state
it measured the Rust and C ABI checks on, so the figures come from one run. Each figure is the median and p99 over
200 batches of the per-call time of a batch (2,000 calls), after a warm-up.

- ``python_baseline_dict_and_clock``: a dict flag read and ``time.time()``, the Python analogue of the Rust
  baseline (a hash-map read and the clock).
- ``ctypes_call_floor``: ``tessera_abi_version()`` through ctypes, the least any call into a C library costs.
- ``ctypes_tessera_check``: ``tessera_check`` through ctypes with a prepared decision struct (the C ABI from
  Python, no Python objects made).
- ``python_agent_check*``: ``Agent.check`` (the package's API: a ``Decision`` with datetimes).
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import time

import tessera
from tessera import _native

BATCH = 2_000
BATCHES = 200


def measure(name: str, fn) -> None:
    for _ in range(BATCH * 5):  # warm-up
        fn()
    per_call = []
    rng = range(BATCH)
    for _ in range(BATCHES):
        start = time.perf_counter_ns()
        for _ in rng:
            fn()
        per_call.append((time.perf_counter_ns() - start) / BATCH)
    per_call.sort()
    median = statistics.median(per_call)
    p99 = per_call[min(len(per_call) - 1, int(len(per_call) * 0.99))]
    print(f"| {name} | {median:.1f} ns | {p99:.1f} ns |", flush=True)


def main(argv: list[str]) -> int:
    state, keyset, product, identity = argv[1:5]
    agent = tessera.Agent(state, keyset=keyset, product_id=product, pinned_identity=identity)
    assert agent.check("export_pdf").reason is tessera.Reason.VALID, agent.check("export_pdf")
    lib = agent._lib
    handle = agent._handle
    raw = _native.RawDecision()
    out = ctypes.byref(raw)
    feature = b"export_pdf"
    flags = {"export_pdf": True}

    print("| Python harness | median per call | p99 of batches |")
    print("|---|---|---|")
    measure("python_baseline_dict_and_clock", lambda: (time.time(), flags.get("export_pdf")))
    measure("ctypes_call_floor", lib.tessera_abi_version)
    measure("ctypes_tessera_check", lambda: lib.tessera_check(handle, feature, out))
    measure("python_agent_check_allowed", lambda: agent.check("export_pdf"))
    measure("python_agent_check_quota_feature", lambda: agent.check("api_calls"))
    measure("python_agent_check_not_entitled", lambda: agent.check("missing"))
    agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
