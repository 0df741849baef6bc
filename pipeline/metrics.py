"""Accuracy metrics and output statistics shared by tests, benchmarks and the CLI."""
from __future__ import annotations

import torch


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (NaN anywhere gives inf)."""
    o, r = out.double(), ref.double()
    if torch.isnan(o).any():
        return float("inf")
    den = r.norm().item()
    return (o - r).norm().item() / (den if den > 0 else 1.0)


def tie_aware_recall(selected: torch.Tensor, exact: torch.Tensor, k_eff: int, rel_tol: float = 2.0 ** -16):
    """Recall of `selected` [n, K] (row ids, -1 padding) against exact scores [n, T] (-inf = invisible).

    A selected id is a hit when its exact score is >= the row's exact K-th largest
    visible score (ties count as hits). `rel_tol` widens "tie" to scores within
    rel_tol * max|score| of that K-th value, since the kernel accumulates fp32 in a
    different order than the reference (pass 0 for the strict count).
    Returns (recall, details) where details has the strict recall, duplicate ids,
    wrong padding counts and invisible picks (all must be 0 for a correct top-k).
    """
    n, T = exact.shape
    nvis = torch.isfinite(exact).sum(-1)
    want = torch.clamp(nvis, max=k_eff)                              # valid slots per row
    if T == 0:
        ok = bool((selected < 0).all())
        return 1.0, {"strict_recall": 1.0, "duplicates": 0, "wrong_padding_rows": 0 if ok else n,
                     "invisible_picks": 0}
    top = torch.topk(exact, k=max(1, min(k_eff, T)), dim=-1).values          # descending
    kth = top.gather(1, (want - 1).clamp(min=0)[:, None])[:, 0]              # the want-th largest
    valid = selected >= 0
    ids = selected.clamp(min=0).long()
    got = exact.gather(1, ids)
    scale = torch.where(torch.isfinite(exact), exact.abs(), torch.zeros_like(exact)).amax(-1)
    tol = rel_tol * scale
    hit = valid & torch.isfinite(got) & (got >= (kth - tol)[:, None])
    strict = valid & torch.isfinite(got) & (got >= kth[:, None])
    n_valid = valid.sum(-1)
    srt = torch.sort(torch.where(valid, selected, -1 - torch.arange(selected.shape[1], device=selected.device)[None]),
                     dim=-1).values
    dups = int((srt[:, 1:] == srt[:, :-1]).sum())
    total = int(want.sum())
    details = {
        "strict_recall": float(strict.sum()) / total if total else 1.0,
        "duplicates": dups,
        "wrong_padding_rows": int((n_valid != want).sum()),
        "invisible_picks": int((valid & ~torch.isfinite(got)).sum()),
    }
    return (float(hit.sum()) / total if total else 1.0), details


def ulp_bf16(x: torch.Tensor) -> torch.Tensor:
    """bf16 ulp of |x| (as fp32); zero -> the smallest bf16 subnormal."""
    x = x.float().abs()
    _, e = torch.frexp(x)                     # |x| in [2^(e-1), 2^e)
    u = torch.ldexp(torch.ones_like(x), (e - 8).to(torch.int32))
    tiny = torch.full_like(u, 2.0 ** -133)
    return torch.where(x > 0, torch.maximum(u, tiny), tiny)


def bf16_rounding_check(k: torch.Tensor, r: torch.Tensor):
    """(err, bound, fraction of elements that differ) for bf16 `k` against bf16 reference `r`.

    bound = 1 ulp of the element + 1 ulp of the row's largest |value|: single bf16 rounding
    flips from a different fp32 op order (signed sums and channel mixing make a near-zero
    element legitimately off by more than its own ulp, never by more than ~1 ulp at the row's scale).
    """
    kf, rf = k.float(), r.float()
    bound = ulp_bf16(rf) + ulp_bf16(rf.abs().amax(dim=-1, keepdim=True))
    differ = (k.view(torch.int16) != r.view(torch.int16)).float().mean().item()
    return (kf - rf).abs(), bound, differ


def tensor_stats(t: torch.Tensor, slab: int = 1 << 22) -> dict:
    """mean, std, NaN and Inf counts of a tensor of any size in bounded memory: fp64 sums over slabs
    of `slab` elements (32 MiB of fp64 at a time; the forward's own workspace is far larger)."""
    flat = t.reshape(-1)
    n = flat.numel()
    s = s2 = 0.0
    nan = inf = 0
    for i in range(0, n, slab):
        x = flat[i:i + slab].double()
        fin = torch.isfinite(x)
        nan += int(torch.isnan(x).sum())
        inf += int(torch.isinf(x).sum())
        x = x[fin]
        s += float(x.sum())
        s2 += float((x * x).sum())
    k = max(1, n - nan - inf)
    mean = s / k
    return {"numel": n, "mean": mean, "std": max(0.0, s2 / k - mean * mean) ** 0.5, "nan": nan, "inf": inf}
