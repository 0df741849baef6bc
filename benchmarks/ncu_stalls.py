"""Where a kernel's warps wait, from an Nsight Compute source page (benchmarks/ncu_one_launch.py makes one):

    ncu --import OUT/score.ncu-rep --page source --print-source sass --csv > score-sass.csv
    python benchmarks/ncu_stalls.py score-sass.csv [TOP] [--loop N]

Prints the warp-stall samples summed by reason, the TOP instructions with the most samples (and their three
largest reasons), and with --loop N the opcode mix of the instructions executed exactly N times (a loop body:
N = warps x trips, e.g. 2,089,984 for the FP8 score walk of the last 2,048-query chunk at 262,144).
Reads plain or gzipped CSV (the records under benchmarks/results/profile-h200/ncu/ are gzipped)."""
import collections
import csv
import gzip
import sys


def number(text: str) -> float:
    text = text.replace(",", "")
    try:
        return float(text)
    except ValueError:
        return 0.0


def read_rows(path: str) -> list:
    """The source page's instruction rows as dicts (its first line names the kernel, its second the columns)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    header = rows[1]
    return [dict(zip(header, r)) for r in rows[2:] if len(r) == len(header)]


def opcode(sass: str) -> str:
    words = sass.split()
    word = words[1] if words[0].startswith("@") else words[0]
    return word.split(".")[0]


def main():
    args = sys.argv[1:]
    loop = None
    if "--loop" in args:
        i = args.index("--loop")
        loop = int(args[i + 1])
        del args[i:i + 2]
    rows = read_rows(args[0])
    top = int(args[1]) if len(args) > 1 else 30
    reasons = [c for c in rows[0] if c.startswith("stall_") and "Not Issued" not in c]
    totals = collections.Counter()
    for r in rows:
        for c in reasons:
            totals[c] += number(r[c])
    all_samples = sum(totals.values())
    print(f"{all_samples:.0f} warp-stall samples")
    for c, v in totals.most_common():
        if v:
            print(f"  {c[6:]:20} {v:9.0f} {100 * v / all_samples:5.1f} %")
    print(f"\nthe {top} instructions with the most samples (address, samples, executions, SASS, largest reasons)")
    for r in sorted(rows, key=lambda r: -number(r["Warp Stall Sampling (All Samples)"]))[:top]:
        largest = sorted(reasons, key=lambda c: -number(r[c]))[:3]
        print(f"  {r['Address'][-5:]} {number(r['Warp Stall Sampling (All Samples)']):7.0f} "
              f"{number(r['Instructions Executed']):10.0f}  {r['Source'].strip()[:56]:56} "
              + ", ".join(f"{c[6:]} {number(r[c]):.0f}" for c in largest))
    if loop is not None:
        body = [r for r in rows if number(r["Instructions Executed"]) == loop]
        mix = collections.Counter(opcode(r["Source"].strip()) for r in body)
        print(f"\n{len(body)} instructions executed {loop} times, by opcode:")
        print("  " + ", ".join(f"{o} {n}" for o, n in mix.most_common()))


if __name__ == "__main__":
    main()
