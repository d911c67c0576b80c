#!/usr/bin/env python3
"""Times `tessera-agent check` as a whole process against /bin/true, interleaved in the same run.

usage: scripts/process-check.py TARGET_DIR [RUNS]
Prepares an offline-activated state with the agent's demo_state example, then runs both commands RUNS times each.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

target = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 300
agent = os.path.join(target, "tessera-agent")
demo = os.path.join(target, "examples", "demo_state")
work = tempfile.mkdtemp()
out = subprocess.run([demo, work], check=True, capture_output=True, text=True).stdout
env = dict(os.environ)
for line in out.splitlines():
    line = line.strip()
    if line.startswith("export "):
        k, v = line[len("export "):].split("=", 1)
        env[k] = v.strip("'\"")
cmds = {"baseline: /bin/true": ["/bin/true"], "tessera-agent check export_pdf": [agent, "check", "export_pdf"]}
times = {k: [] for k in cmds}
for _ in range(runs):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times[name].append((time.perf_counter() - t) * 1000)
        if name.startswith("tessera") and r.returncode != 0:
            sys.exit(f"check failed with exit code {r.returncode}: is the demo state activated?")
base = statistics.median(times["baseline: /bin/true"])
print(f"\n{runs} runs each, interleaved\n")
print("| command | median | p99 | median minus /bin/true |")
print("|---|---|---|---|")
for name, ts in times.items():
    ts.sort()
    med = statistics.median(ts)
    p99 = ts[min(len(ts) - 1, int(len(ts) * 0.99))]
    print(f"| {name} | {med:.2f} ms | {p99:.2f} ms | {med - base:.2f} ms |")
