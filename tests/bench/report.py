#!/usr/bin/python3
"""Turns tests/bench/bench.sh's runs.tsv into the tables it prints.

    report.py RUNS.TSV DISK_BYTES RUNS

Each line of RUNS.TSV is one timed run:
    case wall_s logical_bytes out_bytes src_rss_kib tgt_rss_kib cpu_s
    expected_out others
(- where a figure does not apply; others: cores that other processes kept
busy during the run).  Every row printed is the median of its
runs, column by column.
"""
import statistics
import sys

ROWS = [
    ("full_source_side", "full backup, source-side encryption"),
    ("full_inflight", "full backup, in-flight encryption"),
    ("nbd_full", "the same over NBD (qemu-nbd, Unix socket)"),
    ("incr1", "incremental, 1% of blocks changed"),
    ("incr0", "incremental, nothing changed"),
    ("restore", "restore to a file (fsynced)"),
    ("zstd", "zstd -1 -T0 -c image > /dev/null"),
    ("borg_create", "borg create --compression zstd,1"),
    ("borg_extract", "borg extract --sparse + fsync"),
    ("restic_backup", "restic backup (compression auto)"),
    ("restic_restore", "restic restore + fsync"),
    ("rss_4G", "full backup, 4 GiB sparse disk (RSS)"),
    ("rss_64G", "full backup, 64 GiB sparse disk (RSS)"),
]

SETTING_ROWS = [
    ("full_inflight", "1M", 1, "full backup"),
    ("bs4M_full", "4M", 1, "full backup"),
    ("l3_full", "1M", 3, "full backup"),
    ("incr1", "1M", 1, "incremental, 1% changed"),
    ("bs4M_incr1", "4M", 1, "incremental, 1% changed"),
]

GiB = 1 << 30


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 9:
                continue
            runs.setdefault(p[0], []).append(p[1:])
    return runs


def median(rows, i):
    vals = [float(r[i]) for r in rows if r[i] not in ("-", "")]
    return statistics.median(vals) if vals else None


def summary(runs, case):
    if case not in runs:
        return None
    r = runs[case]
    s = {
        "n": len(r),
        "wall": median(r, 0),
        "logical": median(r, 1),
        "out": median(r, 2),
        "rss_src": median(r, 3),
        "rss_tgt": median(r, 4),
        "cpu": median(r, 5),
        "expected": median(r, 6),
        "others": median(r, 7),
    }
    return s


def fmt(v, spec, scale=1.0):
    return "-" if v is None else format(v / scale, spec)


def row_line(label, s):
    if s is None:
        return "%-40s %s" % (label, "n/a (not run)")
    mbs = s["logical"] / s["wall"] / 1e6 if s["wall"] else None
    cpu_gib = s["cpu"] / (s["logical"] / GiB) if s["cpu"] is not None \
        else None
    return "%-40s %7s %8s %9s %8s %8s %9s %7s" % (
        label, fmt(s["wall"], ".2f"), fmt(mbs, ".0f"),
        fmt(s["out"], ".1f", 1e6), fmt(s["rss_src"], ".0f", 1024),
        fmt(s["rss_tgt"], ".0f", 1024), fmt(cpu_gib, ".2f"),
        fmt(s["others"], ".2f"))


def ratio_line(what, a, b, limit, key="wall"):
    if a is None or b is None or a[key] is None or not b[key]:
        return "%-48s %8s  (target <= %.2f)" % (what, "n/a", limit)
    r = a[key] / b[key]
    # Three decimals: the verdict is on r, so show enough of r that
    # "1.15 ... MISS" never stands for 1.152.
    return "%-48s %8.3f  (target <= %.2f)  %s" % (
        what, r, limit, "PASS" if r <= limit else "MISS")


def main():
    runs = load(sys.argv[1])
    disk = int(sys.argv[2])
    nruns = sys.argv[3]
    S = {c: summary(runs, c) for c, _ in ROWS}
    for c, _, _, _ in SETTING_ROWS:
        S.setdefault(c, summary(runs, c))

    print("Medians of %s runs on a %.2f GiB image; MB/s = disk size / "
          "wall time (MB = 10^6 bytes)." % (nruns, disk / GiB))
    print("out MB: ours = bytes on the wire (backup: bytes_sent, restore: "
          "bytes_received);")
    print("        zstd = compressed size; borg/restic = repository size "
          "(local, no wire).")
    print("RSS: ours = source (peak_rss_kib) and target (VmHWM); peers = "
          "the tool (in the first column).")
    print("CPU s/GiB: user + system seconds of every process involved "
          "(both daemons for ours) per GiB of disk.")
    print("others: cores kept busy by other processes during the runs "
          "(a shared machine);")
    print("        wall times of rows well above 0 are inflated, CPU s/GiB "
          "much less so.")
    print()
    print("%-40s %7s %8s %9s %8s %8s %9s %7s" % (
        "case", "wall s", "MB/s", "out MB", "src MiB", "tgt MiB",
        "CPU s/GiB", "others"))
    for case, label in ROWS:
        if case in ("full_source_side", "nbd_full", "rss_4G", "rss_64G") \
                and S[case] is None:
            print("%-40s %s" % (label, "n/a (not run)"))
            continue
        print(row_line(label, S[case]))

    print()
    print("Ratios to the issue's targets (ours / peer, wall time):")
    full = S["full_source_side"] or S["full_inflight"]
    ss = "source-side" if S["full_source_side"] else "in-flight"
    print(ratio_line("full (%s) / zstd -1 -T0" % ss, full, S["zstd"], 1.3))
    print(ratio_line("full (%s) / borg create" % ss, full,
                     S["borg_create"], 0.5))
    if S["full_source_side"]:
        print(ratio_line("full (in-flight) / zstd -1 -T0",
                         S["full_inflight"], S["zstd"], 1.3))
        print(ratio_line("full (in-flight) / borg create",
                         S["full_inflight"], S["borg_create"], 0.5))
    print(ratio_line("incremental 1% / full (in-flight)", S["incr1"],
                     S["full_inflight"], 0.3))
    print(ratio_line("incremental nothing changed / full", S["incr0"],
                     S["full_inflight"], 0.25))
    print(ratio_line("restore / borg extract", S["restore"],
                     S["borg_extract"], 0.5))
    if S.get("nbd_full"):
        print(ratio_line("full over NBD / full direct (in-flight)",
                         S["nbd_full"], S["full_inflight"], 1.15))
    # Peak RSS of each daemon, the worst of every row of ours.
    ours = [S[c] for c in ("full_source_side", "full_inflight", "incr1",
                           "incr0", "restore", "bs4M_full", "bs4M_incr1",
                           "l3_full", "nbd_full", "rss_4G", "rss_64G")
            if S.get(c)]
    for key, name in (("rss_src", "source"), ("rss_tgt", "target")):
        vals = [s[key] for s in ours if s[key] is not None]
        if vals:
            m = max(vals) / 1024
            print("%-48s %5.0f MiB  (target < 256 MiB)  %s" % (
                "peak RSS of the %s, worst row" % name, m,
                "PASS" if m < 256 else "MISS"))
    r4, r64 = S.get("rss_4G"), S.get("rss_64G")
    if r4 and r64:
        for key, name in (("rss_src", "source"), ("rss_tgt", "target")):
            if r4[key] and r64[key] is not None:
                r = r64[key] / r4[key]
                print("%-48s %8.3f  (target: flat, <= 1.10)  %s" % (
                    "peak RSS of the %s, 64 GiB / 4 GiB sparse" % name, r,
                    "PASS" if r <= 1.10 else "MISS"))
    i1 = S["incr1"]
    if i1 and i1["expected"]:
        print(ratio_line("incremental 1%: wire / zstd -1 of changed "
                         "blocks", {"w": i1["out"]}, {"w": i1["expected"]},
                         1.05, key="w"))
    print("For reference, not targets:")
    print(ratio_line("  full (in-flight) / restic backup",
                     S["full_inflight"], S["restic_backup"], 1.0))
    print(ratio_line("  restore / restic restore", S["restore"],
                     S["restic_restore"], 1.0))

    if S.get("bs4M_full") or S.get("l1_full"):
        print()
        print("Settings (in-flight; block_size and compression_level in "
              "source.conf):")
        print("%-24s %5s %3s %7s %8s %9s %8s %8s %9s %7s %8s" % (
            "case", "block", "lvl", "wall s", "MB/s", "wire MB", "src MiB",
            "tgt MiB", "CPU s/GiB", "others", "wire/exp"))
        for case, bs, lvl, label in SETTING_ROWS:
            s = S.get(case)
            if s is None:
                continue
            line = row_line("", s)[40:]
            exp = "%.2f" % (s["out"] / s["expected"]) if s["expected"] \
                else "-"
            print("%-24s %5s %3d%s %8s" % (label, bs, lvl, line, exp))
        print("wire/exp: bytes on the wire / zstd -1 size of the changed "
              "blocks at that block size")

main()
