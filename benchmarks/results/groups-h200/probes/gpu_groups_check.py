"""The group maxima the score kernel writes for the selection, and the forwards they sit in, with a hash of
every output, so that the same script run on two trees (PYTHONPATH at each, one process each, alternating)
compares them bit for bit and in time:

    python benchmarks/gpu_groups_check.py OUT_DIR TAG [quick]

Cases, on the last 2,048-query chunk of v4-flash at S = 262,144 (65,536 keys visible; the scores are the FP8
kernel's on packed random operands): the score kernel alone without and with the group maxima (the same
scores: equal digests), the maxima against a torch computation from the stored scores (bit for bit), and the
selection alone on those scores with its own pass 1 and with the maxima (the same key lists); then v4-flash
composed at 262,144, its standalone indexer, a packed batch of 4 x 65,536, one sequence of 65,536, v3.2
composed at 131,072 and v4-pro composed at 262,144 (gpu_select_check.timed). A tree whose launchers take no
`group_max` records the cases without it only. Writes OUT_DIR/groups-check-TAG.json, prints a table last."""
import inspect
import sys

import torch
import triton

from gpu_score_check import chunk_operands, pack
from gpu_overlap_check import forward_case
from gpu_select_check import DEFAULT, FORWARDS, digest, run_records, timed
from kernels_triton.indexer import cost as indexer_cost
from kernels_triton.indexer import kernel as indexer_kernel
from kernels_triton.indexer import naive as indexer_naive
from pipeline.lang.presets import preset

S, N = 262144, 2048
HAS_GROUPS = "group_max" in inspect.signature(indexer_kernel.score_chunk_fp8).parameters


class LastChunk:
    """The last chunk's packed operands, scores and key lists, shared by the kernel cases."""

    def __init__(self):
        ix = preset("v4-flash").indexer
        self.ratio, self.topk = 4, ix.topk
        self.s_first, T = S - N, S // 4
        q, self.w, k = chunk_operands(N, T, self.s_first)
        (self.q8, self.qs), (self.k8, self.ks) = pack(q), pack(k)
        self.scores = torch.full((N, T + 64), float("nan"), device="cuda")
        self.gm = torch.full((N, indexer_cost.score_groups(self.topk)), float("nan"), device="cuda") \
            if HAS_GROUPS else None
        self.ids = torch.empty(N, self.topk, dtype=torch.int32, device="cuda")

    def score(self, groups: bool):
        extra = {"group_max": self.gm} if groups else {}
        indexer_kernel.score_chunk_fp8(self.q8, self.qs, self.w, self.k8, self.ks, self.scores,
                                       s_first=self.s_first, ratio=self.ratio, **extra)

    def select(self, groups: bool):
        extra = {"group_max": self.gm} if groups else {}
        indexer_kernel.select_chunk(self.scores, self.ids, s_first=self.s_first, ratio=self.ratio,
                                    k_eff=self.topk, topk=self.topk, **extra)


CHUNK = []


def chunk() -> LastChunk:
    if not CHUNK:
        CHUNK.append(LastChunk())
    return CHUNK[0]


def score_case(groups: bool) -> dict:
    c = chunk()
    c.score(groups)
    rec = {"case": f"score fp8 alone, last {N} of {S}" + (", + group maxima" if groups else ""),
           "digest": digest(c.scores),
           "median_ms": triton.testing.do_bench(lambda: c.score(groups), warmup=20, rep=300, return_mode="median")}
    if groups:
        rows = torch.arange(c.s_first, S, device="cuda")
        want = indexer_naive.group_maxima(c.scores[:, :S // 4], torch.zeros_like(rows), (rows + 1) // c.ratio,
                                          c.gm.shape[1])
        same = (c.gm == want) | (torch.isnan(c.gm) & torch.isnan(want))
        rec["group_max_exact"] = bool(same.all())
    return rec


def select_case(groups: bool) -> dict:
    c = chunk()
    c.score(HAS_GROUPS)          # the scores (and maxima) both selections read
    c.select(groups)
    return {"case": f"select alone, top-{c.topk}, those scores" + (", threshold from the maxima" if groups else ""),
            "digest": digest(c.ids),
            "median_ms": triton.testing.do_bench(lambda: c.select(groups), warmup=20, rep=300, return_mode="median")}


def free_chunk() -> dict:
    CHUNK.clear()
    return {"case": "(the chunk's tensors freed)", "digest": None, "median_ms": 0.0}


def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    quick = sys.argv[3:] == ["quick"]       # the kernels, v4-flash composed and its indexer only
    kernels = [lambda: score_case(False), lambda: select_case(False)]
    if HAS_GROUPS:
        kernels += [lambda: score_case(True), lambda: select_case(True)]
    forwards = FORWARDS[:2] if quick else FORWARDS + [lambda: timed(forward_case("v4-pro 262144", "v4-pro", 262144,
                                                                                 DEFAULT))]
    run_records(kernels + [free_chunk] + forwards, "groups-check", out_dir, tag)


if __name__ == "__main__":
    main()
