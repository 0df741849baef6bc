"""Draw docs/img/v4-flash-scaling.png from the committed JSON records in benchmarks/results/."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csa_dsl import benchmarks as bm  # noqa: E402

R = os.path.join(ROOT, "benchmarks", "results")


def load(name):
    with open(os.path.join(R, name)) as f:
        return json.load(f)


def line(ax, recs, key, label, style, **kw):
    ok = sorted((r for r in recs if r["status"] == "ok"), key=lambda r: r["seq_len"])
    if ok:
        ax.plot([r["seq_len"] for r in ok], [r[key] for r in ok], style, label=label, **kw)


def main(out=os.path.join(ROOT, "docs", "img", "v4-flash-scaling.png")):
    ih, i2 = load("indexer-v4-flash-h100.json"), load("indexer-v4-flash-h200.json")
    ch, c2 = load("composed-v4-flash-h100.json"), load("composed-v4-flash-h200.json")
    by = lambda recs, p: [r for r in recs if r["path"] == p]  # noqa: E731
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4))
    line(a1, by(ih, "triton"), "median_ms", "indexer (score + top-k), H100", "o-")
    line(a1, i2, "median_ms", "indexer, H200", "o--")
    line(a1, by(ch, "composed"), "median_ms", "composed forward, H100", "^-")
    line(a1, c2, "median_ms", "composed forward, H200", "^--")
    line(a1, by(ih, "materialize"), "median_ms", "materialize indexer, H100", "x-")
    line(a1, by(ch, "materialize"), "median_ms", "materialize forward, H100", "v-")
    si = sorted(bm.STREAMINDEX_H200_MS.items())
    a1.plot([s for s, _ in si], [v for _, v in si], "s:", color="gray", label="StreamIndex indexer, H200 (published)")
    a1.plot([262144], [bm.STREAMINDEX_H200_COMPOSED["median_ms"]], "D", color="black",
            label="StreamIndex + TileLang attention, H200")
    for s in sorted({r["seq_len"] for r in ih + ch if r["status"] == "oom"}):
        a1.axvline(s, color="red", alpha=0.08)
    line(a2, by(ih, "triton"), "peak_gib", "indexer, H100 (chunk 2048; output incl.)", "o-")
    line(a2, i2, "peak_gib", "indexer, H200 (chunk 1024; output incl.)", "o--")
    line(a2, by(ch, "composed"), "peak_gib", "composed forward, H100", "^-")
    line(a2, c2, "peak_gib", "composed forward, H200", "^--")
    line(a2, by(ih, "materialize"), "peak_gib", "materialize indexer", "x-")
    line(a2, by(ch, "materialize"), "peak_gib", "materialize forward", "v-")
    a2.plot([262144], [bm.STREAMINDEX_H200_COMPOSED["peak_gib"]], "D", color="black",
            label="StreamIndex + TileLang attention, H200")
    for ax, yl in ((a1, "median ms"), (a2, "peak GiB above inputs (and output)")):
        bm.loglog_axes(ax, "S (v4-flash, B = 1)", yl)
    a1.set_title("time (red bands: materialize out of memory on the H100)", fontsize=9)
    a2.set_title("memory beyond the inputs", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
