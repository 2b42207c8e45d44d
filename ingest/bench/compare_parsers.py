#!/usr/bin/env python3
"""Side-by-side mmCIF parsing throughput: scalefold against gemmi and Biopython.

Runs, in one process run and on the same files, single-threaded:
  * gemmi.read_structure(path)                      (C++; builds the full model)
  * Bio.PDB.MMCIFParser(QUIET=True).get_structure   (pure Python)
  * `scalefold bench parse --json FILES`            (mmCIF -> atom37 chain records)
Each parser reads every file (from the page cache) repeatedly until --min-seconds have
passed. Throughput is megabytes of uncompressed mmCIF text per second and files per
second; the last line printed is one JSON object with all figures and the ratios.

Usage:
  pip install gemmi biopython
  cargo build --release -p scalefold
  python3 ingest/bench/compare_parsers.py --scalefold target/release/scalefold \
      $SCALEFOLD_TESTDATA/mmcif/*.cif
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
import warnings


def uncompressed_size(path):
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return len(f.read())
    return os.path.getsize(path)


def measure(name, parse_one, files, min_seconds):
    """Parses every file in turn until min_seconds have passed (whole passes only)."""
    for path in files:  # warm-up: imports, page cache
        parse_one(path)
    passes = 0
    start = time.perf_counter()
    while True:
        for path in files:
            parse_one(path)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    total_bytes = passes * sum(uncompressed_size(p) for p in files)
    return {
        "parser": name,
        "passes": passes,
        "seconds": elapsed,
        "mb_per_s": total_bytes / 1e6 / elapsed,
        "files_per_s": passes * len(files) / elapsed,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="mmCIF files (.cif)")
    parser.add_argument("--scalefold", default="target/release/scalefold", help="the scalefold binary")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args()

    import gemmi
    from Bio.PDB import MMCIFParser
    import Bio

    results = []
    results.append(measure("gemmi " + gemmi.__version__, lambda p: gemmi.read_structure(p), args.files, args.min_seconds))

    bio = MMCIFParser(QUIET=True)

    def biopython(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bio.get_structure("x", path)

    results.append(measure("biopython " + Bio.__version__, biopython, args.files, args.min_seconds))

    out = subprocess.run(
        [args.scalefold, "bench", "parse", "--json", "--min-seconds", str(args.min_seconds), *args.files],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    ours = json.loads(out)
    ours["parser"] = "scalefold"
    results.append(ours)

    total_mb = sum(uncompressed_size(p) for p in args.files) / 1e6
    print(f"{len(args.files)} files, {total_mb:.2f} MB uncompressed, 1 thread each")
    print(f"{'parser':<20} {'MB/s':>10} {'files/s':>10}")
    for r in results:
        print(f"{r['parser']:<20} {r['mb_per_s']:>10.2f} {r['files_per_s']:>10.2f}")
    gemmi_r, bio_r = results[0], results[1]
    summary = {
        "bench": "compare_parsers",
        "files": len(args.files),
        "megabytes": total_mb,
        "results": results,
        "speedup_vs_gemmi": ours["mb_per_s"] / gemmi_r["mb_per_s"],
        "speedup_vs_biopython": ours["mb_per_s"] / bio_r["mb_per_s"],
    }
    print(f"scalefold / gemmi = {summary['speedup_vs_gemmi']:.2f}x, "
          f"scalefold / biopython = {summary['speedup_vs_biopython']:.1f}x")
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
