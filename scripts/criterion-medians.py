#!/usr/bin/env python3
"""Prints a Markdown table of criterion medians (with the p99 of the sample times) for the given groups.

usage: scripts/criterion-medians.py [TARGET_DIR] [GROUP ...]
Reads TARGET_DIR/criterion/<group>/<bench>/new/{estimates,sample}.json written by `cargo bench`.
"""
import json
import os
import sys


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "target"
    groups = sys.argv[2:]
    root = os.path.join(target, "criterion")
    print("| benchmark | median | p99 of samples |")
    print("|---|---|---|")
    for group in sorted(os.listdir(root)):
        if groups and group not in groups:
            continue
        gdir = os.path.join(root, group)
        if not os.path.isdir(gdir) or group == "report":
            continue
        # A benchmark outside any group sits directly under criterion/<name>/new.
        benches = [""] if os.path.isdir(os.path.join(gdir, "new")) else sorted(os.listdir(gdir))
        for bench in benches:
            est = os.path.join(gdir, bench, "new", "estimates.json")
            smp = os.path.join(gdir, bench, "new", "sample.json")
            if not os.path.exists(est):
                continue
            median = json.load(open(est))["median"]["point_estimate"]
            p99 = ""
            if os.path.exists(smp):
                s = json.load(open(smp))
                per_iter = sorted(t / n for t, n in zip(s["times"], s["iters"]))
                p99 = fmt(per_iter[min(len(per_iter) - 1, int(len(per_iter) * 0.99))])
            name = f"{group}/{bench}" if bench else group
            print(f"| {name} | {fmt(median)} | {p99} |")


main()
