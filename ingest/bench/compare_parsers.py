#!/usr/bin/env python3
"""Side-by-side mmCIF parsing throughput: scalefold against gemmi and Biopython.

Runs, in one process run and on the same files, single-threaded:
  * gemmi.read_structure(path)                      (C++; builds the full model)
  * Bio.PDB.MMCIFParser(QUIET=True).get_structure   (pure Python)
  * `scalefold bench parse --json FILES`            (mmCIF -> atom37 chain records)
Each parser reads every file (from the page cache) repeatedly until --min-seconds have
passed. gemmi and scalefold are measured alternately for --rounds rounds (the machines
are shared and noisy) and the median ratio is reported; Biopython, far slower, once.
Throughput is megabytes of uncompressed mmCIF text per second and files per second; the
last line printed is one JSON object with all figures and the ratios.

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
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import gemmi
    try:
        from Bio.PDB import MMCIFParser
        import Bio
    except ImportError:  # Biopython is optional (e.g. on a machine without network)
        Bio = None
        print("note: Biopython is not installed; measuring gemmi and scalefold only")

    def scalefold():
        out = subprocess.run(
            [args.scalefold, "bench", "parse", "--json", "--min-seconds", str(args.min_seconds), *args.files],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        result = json.loads(out)
        result["parser"] = "scalefold"
        return result

    rounds = []
    for _ in range(args.rounds):
        g = measure("gemmi " + gemmi.__version__, lambda p: gemmi.read_structure(p), args.files, args.min_seconds)
        ours = scalefold()
        rounds.append({"gemmi": g, "scalefold": ours, "ratio": ours["mb_per_s"] / g["mb_per_s"]})

    bio_result = None
    if Bio is not None:
        bio = MMCIFParser(QUIET=True)

        def biopython(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bio.get_structure("x", path)

        bio_result = measure("biopython " + Bio.__version__, biopython, args.files, args.min_seconds)
        ours_after = scalefold()

    total_mb = sum(uncompressed_size(p) for p in args.files) / 1e6
    print(f"{len(args.files)} files, {total_mb:.2f} MB uncompressed, 1 thread each")
    print(f"{'round':<6} {'parser':<20} {'MB/s':>10} {'files/s':>10}")
    for i, r in enumerate(rounds):
        for key in ("gemmi", "scalefold"):
            x = r[key]
            print(f"{i + 1:<6} {x['parser']:<20} {x['mb_per_s']:>10.2f} {x['files_per_s']:>10.2f}")
    if bio_result is not None:
        for x in (bio_result, ours_after):
            print(f"{'bio':<6} {x['parser']:<20} {x['mb_per_s']:>10.2f} {x['files_per_s']:>10.2f}")
    ratios = sorted(r["ratio"] for r in rounds)
    summary = {
        "bench": "compare_parsers",
        "files": len(args.files),
        "megabytes": total_mb,
        "rounds": rounds,
        "speedup_vs_gemmi_median": ratios[len(ratios) // 2],
        "speedup_vs_gemmi_range": [ratios[0], ratios[-1]],
    }
    line = (f"scalefold / gemmi = {summary['speedup_vs_gemmi_median']:.2f}x median "
            f"({ratios[0]:.2f}..{ratios[-1]:.2f})")
    if bio_result is not None:
        summary["biopython"] = bio_result
        summary["scalefold_next_to_biopython"] = ours_after
        summary["speedup_vs_biopython"] = ours_after["mb_per_s"] / bio_result["mb_per_s"]
        line += f", scalefold / biopython = {summary['speedup_vs_biopython']:.1f}x"
    print(line)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
