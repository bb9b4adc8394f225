#!/usr/bin/env python3
"""Picks the few corpus entries worth committing as seeds: greedy maximum edge coverage.

`cargo fuzz cmin` keeps every input that adds a feature (hundreds of files after ten minutes);
this keeps the committed seeds and adds at most LIMIT inputs from CANDIDATES (a cmin'd
corpus), each the one that adds the most coverage edges not yet covered (ties: the smaller
file), while it adds at least MIN_GAIN edges. Each file's edges come from a libFuzzer merge run
on that file alone (the merge control file's COV line), so they are its full coverage.

Usage (from fuzz/, after `cargo fuzz build -a` and `cargo fuzz cmin -a TARGET`):
    pick-seeds.py target/x86_64-unknown-linux-gnu/release/TARGET seeds/TARGET corpus/TARGET \
        [LIMIT [MIN_GAIN]]
Copies the chosen inputs into seeds/TARGET as found-<sha1>, prints what they cover.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile


def edges(binary, path):
    """The coverage edges (PC table indices) one input reaches."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        os.mkdir(inputs)
        os.mkdir(out)
        shutil.copyfile(path, os.path.join(inputs, "input"))
        control = os.path.join(tmp, "control")
        subprocess.run(
            [binary, "-merge=1", f"-merge_control_file={control}", out, inputs],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if not os.path.exists(control):
            return set()  # libFuzzer skips an empty input
        with open(control) as f:
            for line in f:
                if line.startswith("COV "):
                    return set(map(int, line.split()[2:]))
    return set()


def files(directory):
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if os.path.isfile(os.path.join(directory, name))
    )


def main():
    binary, seeds_dir, candidates_dir = sys.argv[1:4]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    min_gain = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    covered = set()
    for path in files(seeds_dir):
        covered |= edges(binary, path)
    seed_edges = len(covered)
    cov = {path: edges(binary, path) for path in files(candidates_dir)}
    all_edges = covered.union(*cov.values())
    chosen = []
    while len(chosen) < limit and cov:
        best = max(cov, key=lambda p: (len(cov[p] - covered), -os.path.getsize(p)))
        if len(cov[best] - covered) < min_gain:
            break
        covered |= cov.pop(best)
        chosen.append(best)
    total = 0
    for path in chosen:
        with open(path, "rb") as f:
            data = f.read()
        total += len(data)
        name = "found-" + hashlib.sha1(data).hexdigest()[:12]
        shutil.copyfile(path, os.path.join(seeds_dir, name))
    print(
        f"edges: seeds and candidates {len(all_edges)}, seeds alone {seed_edges}, "
        f"seeds + {len(chosen)} picked ({total} bytes) {len(covered)}"
    )


if __name__ == "__main__":
    main()
