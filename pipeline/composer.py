"""The composer: a Pipeline spec + a schedule -> the Program that runs.

The program is a loop over query chunks in which
  (a) the compressed rows every chunk may see already exist: both compressors run once ahead
      of the loop (their outputs, T x (D + DI) bf16, are 80 MiB at S = 262,144 for v4-flash,
      and chunk c needs all rows up to its last query, so fusing them into the loop would
      only re-read their inputs);
  (b) the indexer scores only the visible key tiles of the chunk into a bounded [C, T] buffer
      and the partial top-k selects from it (the selection writes the window ids of each key
      list too). On CUDA the scores run on a side stream into a ring of two such buffers, so
      chunk c+1's scores overlap chunk c's selection and attention (pipeline/streams.py orders
      the streams wherever they share bytes);
  (c) the sparse attention consumes the chunk's key lists at once and writes its rows of
      `out`; the inverse RoPE runs in place on those rows.
Layers without an indexer take the same loop: an HCA layer's key lists are the window and every
visible compressed row (hca.keys), a window-only layer has no key list at all (the attention
computes the window ids itself).
The [S, T] score tensor never exists, except in the 'materialize' schedule, which is the same
program with one chunk of all S queries and the indexer on its PyTorch stages (the public
reference code's naive schedule). The 'reference' schedule is the same program on the exact
PyTorch stages. Every loop shape lives here; the interpreter only walks what it is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from kernels_tilelang.sparse_mla.kernel import rope_fusable
from kernels_triton.indexer import cost as indexer_cost
from kernels_triton.quant.formats import keys_dtype
from kernels_triton.rope.tables import Rotary
from kernels_triton.varlen.naive import ROW_COLS, SEG_COLS, score_columns

from .lang import defaults
from .lang.errors import SpecError
from .lang.spec import Pipeline, Quant, SelfIndex, check_score_options
from .program import Buffer, Call, E, Expr, Loop, Node, Program, R, Ref
from .stages import OPS, stages_of
from .stages.attention import implicit_window
from .stages.compressor import params as compressor_params
from .stages.compressor import role_quant, rotary
from .stages.indexer import bf16_scores, writes_group_maxima
from .stages.quant import index_quant

PATH_IMPLS = ("composed", "reference", "materialize")
SCORE_STREAM = "score"       # the side stream the overlapped score calls are issued on


@dataclass(frozen=True)
class Packed:
    """A packed variable-length batch (docs/semantics.md section 8): `sequences` sequences, none longer
    than `max_seqlen` tokens, laid end to end along the token axis of B = 1 inputs. Its program is the
    B = 1 program over all packed tokens whose calls also read their rows of the segment tables
    (stages/varlen.py): T counts a bound on the packed compressed rows (N // m), K the longest
    sequence's list width, the RoPE tables its positions."""

    sequences: int
    max_seqlen: int


def impl_for(path: str, backend: str, op: str) -> str:
    """The backend that runs `op` under a schedule path."""
    if path == "reference":
        return "torch"
    if path == "materialize" and op.startswith("indexer."):
        return "torch"
    return backend


def kernel_names(names: List[str]) -> Dict[str, str]:
    """'op@impl' -> kernel description, for every implementation of the ops a program uses."""
    return {f"{n}@{b}": impl.kernel for n in names for b, impl in OPS[n].impls.items()}


def rope_consts(spec: Pipeline) -> Dict[str, object]:
    """Named RoPE parameters: one `rope` when every RoPE of the pipeline is the same (V4), else one per use."""
    idx_c = getattr(spec.indexer, "compressor", None)      # a lightning indexer's key compressor
    uses = {"rope_kv": rotary(spec.compressor.rope) if spec.compressor else None,
            "rope_idx": rotary(idx_c.rope) if idx_c else None,
            "rope_out": rotary(spec.attention.inverse_rope)}
    present = {k: v for k, v in uses.items() if v is not None}
    if len(set(present.values())) == 1:
        return {"rope": next(iter(present.values()))} if present else {}
    return present


def rope_name(consts: Dict[str, object], use: str) -> Optional[str]:
    if "rope" in consts:
        return "rope"
    return use if use in consts else None


def table_args(consts: Dict[str, object], use: str) -> Dict[str, object]:
    """The cos/sin table refs a RoPE use reads (None, None without RoPE)."""
    name = rope_name(consts, use)
    return {"cos": R(f"{name}_cos"), "sin": R(f"{name}_sin")} if name else {"cos": None, "sin": None}


def rope_tables(consts: Dict[str, object], impl: Dict[str, str], positions: int) -> Tuple[List[Buffer], List[Node]]:
    """One pair of cos/sin table buffers per named RoPE of the program (positions 0..positions-1, fp32),
    and the calls that fill them once, ahead of everything that rotates."""
    bufs, calls = [], []
    for name, rot in consts.items():
        if not isinstance(rot, Rotary):
            continue
        for part in ("cos", "sin"):
            bufs.append(Buffer(f"{name}_{part}", (positions, rot.dim // 2), torch.float32, "program",
                               f"RoPE {part} table of positions 0..{positions - 1:,}"))
        calls.append(OPS["rope.tables"].call(impl["rope.tables"],
                                             {"cos": R(f"{name}_cos"), "sin": R(f"{name}_sin"), "rot": E(name)},
                                             dict(positions=positions, rot_dim=rot.dim)))
    return bufs, calls


def program_frame(spec: Pipeline, batch: int, seq_len: int, chunk: int, backend: str, path: str,
                  local_tokens: Optional[int] = None) -> Tuple[Dict[str, str], Dict[str, object], Dict[str, Buffer]]:
    """What every program of a spec starts from: the backend that runs each op, the named constants
    (sizes, softmax scale, RoPE parameters) and the input buffers; per-token inputs hold `local_tokens`
    rows when a rank holds part of the sequence (context parallelism)."""
    a = spec.attention
    impl = {name: impl_for(path, backend, name) for name in OPS}
    consts: Dict[str, object] = {"B": batch, "S": seq_len, "T": spec.num_compressed(seq_len), "C": chunk,
                                 "m": spec.ratio, "W": a.window, "K": spec.topk_eff(seq_len),
                                 "scale": float(a.softmax_scale)}
    consts.update(rope_consts(spec))
    bufs: Dict[str, Buffer] = {}
    for role, kind, stage in stages_of(spec):
        for name, d in kind.inputs(spec, stage, role).items():
            local = local_tokens is not None and d.per_token
            bufs[name] = Buffer(name, d.shape(batch, local_tokens if local else seq_len), d.dtype, "input",
                                d.doc + (" (this rank's blocks)" if local else ""))
    return impl, consts, bufs


def compose(spec: Pipeline, batch: int, seq_len: int, chunk: int, backend: str = "cuda", *, path: str = "composed",
            return_indices: bool = False, budget: Optional[int] = None, packed: Optional[Packed] = None,
            overlap: bool = defaults.OVERLAP_SCORES) -> Program:
    """The Program of one forward of `spec` at (batch, seq_len), `chunk` queries per iteration. `packed`:
    the seq_len tokens (B = 1) are that many sequences end to end (input `cu_seqlens`). `overlap`: on the
    CUDA backend, the scores of chunk c+1 run on a side stream while chunk c is selected (score_ring)."""
    if path not in PATH_IMPLS:
        raise SpecError(f"path {path!r} is not one of {PATH_IMPLS}")
    if batch < 1 or seq_len < 1:
        raise SpecError(f"batch and seq_len must be >= 1, got batch={batch}, seq_len={seq_len}")
    if packed is not None and (batch != 1 or packed.sequences < 1 or not 1 <= packed.max_seqlen <= seq_len):
        raise SpecError(f"a packed batch is B = 1 with 1 <= max_seqlen <= the {seq_len:,} packed tokens, got "
                        f"batch={batch}, {packed}")
    a, ix, c = spec.attention, spec.indexer, spec.compressor
    B, S, m = batch, seq_len, spec.ratio
    longest = packed.max_seqlen if packed else S      # the longest sequence: list width, RoPE positions
    if path == "materialize":
        chunk = S
    C = int(min(chunk, S))
    T = spec.num_compressed(S)
    W, K = a.window, spec.topk_eff(longest)
    off = spec.selected_offset(S)
    impl, consts, bufs = program_frame(spec, B, S, C, backend, path)
    consts["K"] = K

    def buf(name, shape, dtype, scope, note=""):
        bufs[name] = Buffer(name, tuple(shape), dtype, scope, note)

    buf("out", (B, S, a.heads, a.v_dim), torch.bfloat16, "output")
    if return_indices:
        buf("indices", (B, S, W + K), torch.int32, "output", f"key lists: {W} window rows + {K} selected rows"
            + (" (each sequence's own numbering)" if packed else ""))

    body: List[Node] = []
    fused: List[str] = []
    decisions: List[str] = []

    # program scope: the segment tables of a packed batch, the RoPE tables and the compressed rows, made
    # once ahead of the loop
    if packed is not None:
        consts.update(n_seqs=packed.sequences, max_seqlen=packed.max_seqlen)
        buf("cu_seqlens", (packed.sequences + 1,), torch.int32, "input",
            "sequence i is packed tokens [cu[i], cu[i+1])")
        buf("tok_seg", (S, SEG_COLS), torch.int32, "program", "per token: position, first token, first row, length")
        if c is not None:
            buf("row_seg", (T, ROW_COLS), torch.int32, "program", "per packed compressed row: first token, index i")
        body.append(OPS["varlen.segments"].call(
            impl["varlen.segments"], {"cu_seqlens": R("cu_seqlens"), "tok_seg": R("tok_seg"),
                                      "row_seg": R("row_seg") if c is not None else None, "ratio": m if T else 0},
            dict(tokens=S, rows=T if c is not None else 0, sequences=packed.sequences),
            "on the device from cu_seqlens: no host sync"))
    tab_bufs, tab_calls = rope_tables(consts, impl, longest)
    for bf in tab_bufs:
        bufs[bf.name] = bf
    body += tab_calls
    row_seg = {"row_seg": R("row_seg")} if packed is not None else {}
    if c is not None:
        buf("kv_all", (B, S + T, a.qk_dim), torch.bfloat16, "program",
            "rows [0,S): kv; rows [S,S+T): compressed kv (one gather table for the attention)")
        body.append(kv_rows_call(spec, impl, "kv", "kv_all[:, 0:S]", B * S))
        body.append(_compress_call(spec, c, "cmp", "kv_all[:, S:S + T]", impl, consts, "rope_kv", B, T, row_seg))
        kv_rows = "kv_all"
    elif a.kv_quant is not None:
        buf("kv_q", (B, S, a.qk_dim), torch.bfloat16, "program", "the kv rows after their quantisation step")
        body.append(kv_rows_call(spec, impl, "kv", "kv_q", B * S))
        kv_rows = "kv_q"
    else:
        kv_rows = "kv"
    k_name = "idx_k"
    if getattr(ix, "compressor", None) is not None:
        buf("k_idx", (B, T, ix.dim), torch.bfloat16, "program",
            "index keys (Hadamard-rotated)" if ix.compressor.hadamard else "index keys")
        body.append(_compress_call(spec, ix.compressor, "idx", "k_idx", impl, consts, "rope_idx", B, T, row_seg))
        k_name = "k_idx"
    iq = index_quant(spec)
    if iq is not None:
        pbufs, pcall = pack_keys(impl, k_name, B, T, ix.dim, iq, ix.fp8_mma)
        bufs.update({bf.name: bf for bf in pbufs})
        body.append(pcall)
    if isinstance(ix, SelfIndex):
        rows = "kv_all[:, S:S + T]" if c is not None else kv_rows
        buf("codes", (B, T, a.qk_dim // 32), torch.int32, "program",
            "sign bits of every selectable row (1 per channel)")
        buf("alpha", (B, T), torch.float32, "program", "mean |K| of every selectable row")
        body.append(OPS["selfindex.codes"].call(impl["selfindex.codes"],
                                                {"rows": R(rows), "codes_out": R("codes"), "alpha_out": R("alpha")},
                                                dict(batch=B, rows=T, dim=a.qk_dim),
                                                f"{a.qk_dim // 8 + 4} B per row instead of {a.qk_dim * 2}"))
    if c is not None:
        small = (bufs["kv_all"].nbytes - B * S * a.qk_dim * 2
                 + (bufs["k_idx"].nbytes if "k_idx" in bufs else 0)) / 2**20
        decisions.append(f"compressors run once ahead of the loop: their outputs are small ({small:.1f} MiB) "
                         f"and every chunk needs all rows up to its last query")

    # chunk scope: the bounded scratch every iteration reuses. A window-only layer has no key list (unless one
    # is returned, or a packed batch's windows are of a size only key lists give the GPU kernel)
    implicit = spec.layer == "window" and implicit_window(a, impl["attention.attend"], packed is not None)
    listed = spec.layer != "window" or not implicit
    # a packed query's score row holds its own sequence's visible rows from column 0 (varlen/naive.py): as
    # wide as the longest sequence's rows, whatever the packed total
    cols = score_columns(T, longest, m) if packed is not None else T
    ring = score_ring(impl, overlap, K if ix is not None else 0, S, C)
    for bf in chunk_buffers(impl, C=C, T=cols, k_eff=K if ix is not None else 0, topk=ix.topk if ix else 0,
                            keys_width=W + K if listed and not return_indices else 0, window=W, ring=ring,
                            quant=iq, heads=getattr(ix, "heads", 0), dim=getattr(ix, "dim", 0),
                            packed=packed is not None, fp8_mma=getattr(ix, "fp8_mma", False)):
        bufs[bf.name] = bf
    if "scores" in bufs:
        bufs["scores"].note += (": the materialised [S, T] score" if path == "materialize" else " (never [S, T])")
        if packed is not None and path != "materialize":
            bufs["scores"].note += "; each row its own sequence's rows from column 0, max_seqlen / m wide"
    keys = "indices[b, s0:s1]" if return_indices else ("keys[0:s1 - s0]" if listed else None)
    inner = chunk_calls(spec, impl, T=T, C=C, q="q[b, s0:s1]", idx_q="idx_q[b, s0:s1]", idx_w="idx_w[b, s0:s1]",
                        k=f"{k_name}[b]", kv=f"{kv_rows}[b]", keys=keys, out="out[b, s0:s1]", idx_offset=off,
                        has_cand="cand" in bufs, consts=consts, seg="tok_seg[s0:s1]" if packed else None, ring=ring,
                        has_gmax="gmax" in bufs)
    n_chunks = -(-S // C)
    body.append(Loop("b", E(0), E("B"), E(1), [
        Loop("s0", E(0), E("S"), E("C"), inner, chunk_binds(ring),
             f"{n_chunks:,} query chunk{'s' if n_chunks > 1 else ''}", progress=True)]))
    if packed is not None and return_indices:
        body.append(OPS["varlen.local_ids"].call(
            impl["varlen.local_ids"], {"ids": R("indices[0]"), "tok_seg": R("tok_seg"), "window": W,
                                       "sel_offset": off, "compressed": c is not None},
            dict(tokens=S, width=W + K), "packed ids -> each sequence's own (as its B = 1 run numbers them)"))

    if a.kv_quant is not None:
        fused.append(f"kv rows -> {a.kv_quant.format.upper()} step: in the copy into "
                     + ("the gather table, and in the compressor's epilogue for the compressed rows" if c is not None
                        else "the attention's quantised rows"))
    if iq is not None:
        fused.append(f"idx_q -> {iq.format.upper()} step + e4m3-grid packing: once per chunk into q8 (one read of the "
                     f"chunk's queries), which the score reads instead of idx_q"
                     + ("; index keys: the step in the indexer compressor's epilogue" if ix.compressor is not None
                        else ""))
    if ix is not None and K > 0:
        fused.append(f"indexer score -> top-k: per chunk through a bounded score buffer "
                     f"({bufs['scores'].nbytes / ring / 2**20:.1f} MiB" + (f", a ring of {ring})" if ring > 1 else ")")
                     + ("" if path == "materialize" else ", no [S, T] tensor"))
    if ix is not None:
        fused.append("top-k -> attention: the chunk's key lists are consumed in the same iteration")
        if W and impl["indexer.select"] != "torch":
            fused.append("window ids -> top-k: the selection kernel writes each key list's window part too")
    elif spec.layer == "hca":
        fused.append("HCA key lists -> attention: written per chunk and consumed in the same iteration; the "
                     "attention walks only the key blocks under each query's causal bound")
    elif listed:
        fused.append("window key lists -> attention: a packed batch's windows of a size the GPU kernel computes "
                     "only for unpacked rows (kernels_tilelang.sparse_mla.kernel.ring_window), written per chunk")
    if implicit:
        fused.append("window ids -> attention: the kernel computes them from the query position"
                     + (" (a packed batch's from each token's segment row)" if packed is not None else "")
                     + ", no key list" + (" (the returned lists are written beside it)" if return_indices else ""))
    if a.inverse_rope is not None:
        fused.append("attention -> inverse RoPE: " + (
            "in the attention kernel's epilogue, on the output tile before its store (no pass over the output)"
            if rope_fusable(a.v_dim, a.inverse_rope.dim) else
            "in place on the chunk's output rows, a pass of its own (the rotated channels are not in the "
            "kernel's second value half: sparse_mla.kernel.rope_fusable)"))
    if packed is not None:
        fused.append(f"packed batch of {packed.sequences} sequences (max {packed.max_seqlen:,} tokens): every kernel "
                     "reads its rows of the segment tables and keeps each sequence to itself (blocks, windows, "
                     "causal ranges, row offsets); no loop over sequences")
    if ring > 1:
        decisions.append(overlap_note(bufs["scores"]))
    if path == "materialize":
        decisions.append("materialize: one chunk of all S queries, the indexer on its PyTorch stages "
                         "(the public reference code's schedule: the [B, S, HI, T] einsum and the [S, T] score exist)")
    elif ix is not None:
        decisions.append("causal: each chunk scores only key tiles visible to its last query "
                         f"(~{indexer_cost.visible_pairs(S, m) / max(1, S * T):.0%} of the [S, T] rectangle)")
    if path == "reference":
        decisions.append("reference: every stage is its exact PyTorch implementation (kernels_*/*/naive.py)")
    names = sorted({c_.op for c_ in walk_calls(body)})
    return Program(name=spec.name, consts=consts, buffers=bufs, body=body,
                   outputs=("out", "indices") if return_indices else ("out",), kernels=kernel_names(names),
                   notes={"fused stage boundaries": fused, "decisions": decisions},
                   materialize_bytes=materialize_bytes(spec, B, S), budget=budget)


def chunk_calls(spec: Pipeline, impl: Dict[str, str], *, T: int, C: int, q: str, idx_q: str, idx_w: str, k: str,
                kv: str, keys: str, out: str, idx_offset: int, has_cand: bool, consts: Dict[str, object],
                between_select_and_attend: Optional[List[Node]] = None, seg: Optional[str] = None,
                ring: int = 1, has_gmax: bool = False) -> List[Node]:
    """The calls of one query chunk [s0, s1): the key lists (score + select with an indexer, hca.keys
    for HCA, none window-only: `keys` None), attend, inverse RoPE. The single-GPU program and every
    context-parallel rank's program run exactly these (with their own refs).
    `between_select_and_attend`: calls a transform inserts after the key lists are written.
    `seg`: the chunk's rows of a packed batch's segment table (every position-dependent call reads them).
    `ring`: score buffers (score_ring); with 2 the scores go to scores[p] on the score stream.
    `has_gmax`: the score writes the selection's group maxima (chunk_buffers' `gmax`)."""
    ix, W = spec.indexer, spec.attention.window
    calls: List[Node] = []
    k_eff = consts["K"]
    implicit = spec.layer == "window" and implicit_window(spec.attention, impl["attention.attend"], bool(seg))
    sg = {"seg": R(seg)} if seg else {}
    scores, stream = score_slot(ring)
    if isinstance(ix, SelfIndex):
        if k_eff > 0:
            a = spec.attention
            calls.append(OPS["selfindex.score"].call(
                impl["selfindex.score"],
                {"q": R(q), "codes": R("codes[b]"), "alpha": R("alpha[b]"), "out": R(scores), "s_first": E("s0"),
                 "ratio": spec.ratio, **sg},
                dict(chunk=C, rows=T, heads=a.heads, dim=a.qk_dim),
                "1-bit scores of the visible 64-row tiles: qbar . sign(K) * mean|K|", stream))
        calls.append(select_call(impl, topk=ix.topk, ratio=spec.ratio, k_eff=k_eff, T=T, C=C, keys=keys,
                                 idx_offset=idx_offset, window=W, has_cand=has_cand, seg=seg, scores=scores))
    elif ix is not None:
        calls = select_calls(impl, heads=ix.heads, dim=ix.dim, topk=ix.topk, ratio=spec.ratio,
                             k_eff=k_eff, T=T, C=C, idx_q=idx_q, idx_w=idx_w, k=k, keys=keys,
                             idx_offset=idx_offset, window=W, has_cand=has_cand, quant=ix.quant, seg=seg, ring=ring,
                             has_gmax=has_gmax, round_bf16=bf16_scores(spec))
    elif keys is not None:
        rows = k_eff if spec.layer == "hca" else 0      # window-only with returned lists: the window alone
        calls = [OPS["hca.keys"].call(
            impl["hca.keys"], {"out": R(keys), "s_first": E("s0"), "ratio": spec.ratio, "rows": rows,
                               "idx_offset": idx_offset, "window": W, **sg},
            dict(chunk=C, window=W, rows=rows),
            (f"window ids, then the {rows:,} compressed rows + {idx_offset}, the invisible ones -1" if rows
             else "window ids (" + ("returned; the attention computes its own" if implicit else "the packed batch's own")
             + ")"))]
        if implicit:
            keys = None
    return calls + (between_select_and_attend or []) + attend_calls(spec, impl, consts, C=C, q=q, kv=kv, keys=keys,
                                                                     out=out, seg=seg)


def select_calls(impl: Dict[str, str], *, heads: int, dim: int, topk: int, ratio: int, k_eff: int, T: int, C: int,
                 idx_q: str, idx_w: str, k: str, keys: str, idx_offset: int, window: int,
                 has_cand: bool, quant: Optional[Quant] = None, seg: Optional[str] = None,
                 ring: int = 1, has_gmax: bool = False, round_bf16: bool = False) -> List[Node]:
    """score + select of one query chunk [s0, s1): the key lists `keys` (window ids, then the top-k rows).
    With `quant` the score reads the packed keys (k8[b], k_scale[b]: pack_keys) instead of `k`; `seg`, `ring`
    and `has_gmax` as in chunk_calls; `round_bf16`: the score is the official code's bf16 score
    (Indexer.score_rounding)."""
    calls: List[Node] = []
    sg = {"seg": R(seg)} if seg else {}
    rb = {"round_bf16": True} if round_bf16 else {}     # absent by default: the fp32 score's calls read as before
    rounded = "; rounded to bf16 as the official code's score" if round_bf16 else ""
    scores, stream = score_slot(ring)
    gmax = gmax_slot(ring, has_gmax)
    if k_eff > 0 and quant is not None:
        # the chunk's queries packed on the score's stream, so the score (their only reader) follows in order
        calls.append(OPS["quant.pack_queries"].call(
            impl["quant.pack_queries"],
            {"x": R(idx_q), "x8": R("q8[0:s1 - s0]"), "x_scale": R("q_scale[0:s1 - s0]"), "fmt": quant.format,
             "block": quant.block},
            dict(rows=C * heads, dim=dim),
            f"idx_q {quant.format.upper()} step (blocks of {quant.block}) + e4m3-grid packing, one scale per "
            f"(query, head)", stream))
        calls.append(OPS["indexer.score_fp8"].call(
            impl["indexer.score_fp8"],
            {"q8": R("q8[0:s1 - s0]"), "q_scale": R("q_scale[0:s1 - s0]"), "w": R(idx_w), "k8": R("k8[b]"),
             "k_scale": R("k_scale[b]"), "out": R(scores), "s_first": E("s0"), "ratio": ratio, **sg, **rb,
             **({"gmax": gmax} if gmax else {})},
            dict(chunk=C, rows=T, heads=heads, dim=dim),
            "FP8 MMAs on the packed operands; visible 64-key tiles only"
            + ("; each row's group maxima for the selection" if gmax else "") + rounded, stream))
    elif k_eff > 0:
        calls.append(OPS["indexer.score"].call(
            impl["indexer.score"],
            {"q": R(idx_q), "w": R(idx_w), "k": R(k), "out": R(scores), "s_first": E("s0"), "ratio": ratio, **sg,
             **rb, **({"gmax": gmax} if gmax else {})},
            dict(chunk=C, rows=T, heads=heads, dim=dim),
            "visible 64-key tiles only; diagonal tiles masked in-kernel"
            + ("; each row's group maxima for the selection" if gmax else "") + rounded, stream))
    calls.append(select_call(impl, topk=topk, ratio=ratio, k_eff=k_eff, T=T, C=C, keys=keys, idx_offset=idx_offset,
                             window=window, has_cand=has_cand, seg=seg, scores=scores, gmax=gmax))
    return calls


def select_call(impl: Dict[str, str], *, topk: int, ratio: int, k_eff: int, T: int, C: int, keys: str,
                idx_offset: int, window: int, has_cand: bool, seg: Optional[str] = None,
                scores: str = "scores", gmax: Optional[Ref] = None) -> Call:
    """The top-k of one query chunk's scores (any index's; `scores` the ref they are in): its key lists,
    window ids first; `gmax`: the group maxima the score wrote beside them."""
    return OPS["indexer.select"].call(
        impl["indexer.select"],
        {"scores": R(scores) if k_eff > 0 else None, "out": R(keys), "cand": R("cand") if has_cand else None,
         "s_first": E("s0"), "ratio": ratio, "k_eff": E("K"), "topk": topk, "idx_offset": idx_offset,
         "window": window, **({"seg": R(seg)} if seg else {}), **({"gmax": gmax} if gmax else {})},
        dict(chunk=C, rows=T),
        (f"window ids max(0, s-{window - 1})..s, then " if window else "")
        + (f"top-{k_eff} ids + {idx_offset}, -1 padded" if k_eff else "no compressed row yet: the window alone")
        + (" (threshold from the score's group maxima)" if gmax else ""))


def attend_calls(spec: Pipeline, impl: Dict[str, str], consts: Dict[str, object], *, C: int, q: str, kv: str,
                 keys: str, out: str, seg: Optional[str] = None) -> List[Node]:
    """attend + inverse RoPE of one query chunk [s0, s1) over its key lists (`keys` None: the window
    alone, computed by the attention). Every list keeps the causal bound (the window part, then at most
    min(K, (s+1)//m) selected rows, each -1 padded at the end); HCA's pass it on, so the kernel skips
    the blocks past it."""
    a = spec.attention
    W, K = a.window, consts["K"]
    # HCA's lists are mostly -1 early in the sequence: walk only the blocks under each query's bound. An
    # indexer's lists are full after the first K*m queries: the kernel's fixed trip count is faster there.
    # (The bound is of unpacked positions: a packed batch's lists are walked whole.)
    bounded = keys is not None and spec.layer == "hca" and not seg
    rope = {}
    if a.inverse_rope is not None:     # the output's inverse RoPE: the attention's own epilogue
        tables = table_args(consts, "rope_out")
        rope = {"rope_cos": tables["cos"], "rope_sin": tables["sin"], "seg": R(seg) if seg else None}
    if seg and keys is None:           # a packed batch's implicit windows: each token's segment row
        rope["seg"] = R(seg)
    return [OPS["attention.attend"].call(
        impl["attention.attend"],
        {"q": R(q), "kv": R(kv), "keys": R(keys) if keys is not None else None, "out": R(out),
         "sink": R("sink") if a.sink else None, "scale": E("scale"), "v_dim": a.v_dim, "pos0": E("s0"),
         "window": W, "causal_bound": (K, spec.ratio) if bounded else None, **rope},
        dict(rows=C, heads=a.heads, dim_qk=a.qk_dim, dim_v=a.v_dim, keys=W + K),
        f"{a.heads} heads, " + (f"the {W}-row window, no key list" if keys is None else f"{W + K} keys/query")
        + (f", blocks past (s+1)//{spec.ratio} skipped" if bounded else "")
        + (f", then the inverse RoPE of the last {a.inverse_rope.dim} channels" if rope else ""))]


def score_ring(impl: Dict[str, str], overlap: bool, k_eff: int, seq_len: int, chunk: int) -> int:
    """Score buffers of a chunk loop: 2 (a ring: chunk c+1 scores into one while chunk c is selected from
    the other, on two streams) when `overlap` is asked, there are scores (k_eff > 0), more than one chunk,
    and the selection runs on the CUDA backend (streams only exist there; the reference and materialize
    paths select on torch); else 1."""
    cuda = impl["indexer.select"] == "cuda"
    return 2 if overlap and cuda and k_eff > 0 and seq_len > chunk else 1


def ring_slot(name: str, ring: int) -> str:
    """The ref of a chunk's slot of a ring buffer (score_ring): slot p of `name`, or all of it without a ring."""
    return f"{name}[p]" if ring > 1 else name


def score_slot(ring: int) -> Tuple[str, str]:
    """The ref a chunk's scores go to and the stream their call is issued on."""
    return ring_slot("scores", ring), (SCORE_STREAM if ring > 1 else "")


def gmax_slot(ring: int, has_gmax: bool) -> Optional[Ref]:
    """The ref a chunk's group maxima go to (the slot beside its scores), None without them."""
    return R(ring_slot("gmax", ring)) if has_gmax else None


def chunk_binds(ring: int) -> Dict[str, Expr]:
    """The names a chunk loop binds per iteration: s1, and the ring slot p of a score ring."""
    binds = {"s1": E("min(s0 + C, S)")}
    if ring > 1:
        binds["p"] = E(f"s0 // C % {ring}")
    return binds


def overlap_note(scores: Buffer) -> str:
    ring = scores.shape[0]
    return (f"overlap: each chunk's scores run on stream '{SCORE_STREAM}' into slot p of a ring of {ring} score "
            f"buffers ({scores.nbytes / ring / 2**20:.1f} MiB each), so chunk c+1's scores overlap chunk c's "
            f"selection and attention; the streams wait for each other (events) only where their calls share "
            f"bytes, e.g. a slot the next-but-one chunk's scores overwrite once its selection has read it")


def chunk_buffers(impl: Dict[str, str], *, C: int, T: int, k_eff: int, topk: int, keys_width: int = 0,
                  window: int = 0, ring: int = 1, quant: Optional[Quant] = None, heads: int = 0,
                  dim: int = 0, packed: bool = False, fp8_mma: bool = False) -> List[Buffer]:
    """The chunk-scope scratch every iteration reuses: the packed queries (with the indexer's `quant`, `heads`
    x `dim`; `fp8_mma`: Indexer.fp8_mma), scores (`ring` of them), the selection's group maxima where the score
    writes them (`ring` too; `packed`: a packed batch's, whose score walk does not), candidates, key lists
    (keys_width > 0)."""
    out = []
    if k_eff > 0 and quant is not None:
        out += [Buffer("q8", (C, heads, dim), operand_dtype(impl["quant.pack_queries"], quant, fp8_mma), "chunk",
                       "index queries packed: e4m3 grid values"),
                Buffer("q_scale", (C, heads), torch.float32, "chunk",
                       "index queries packed: a power-of-two scale per (query, head)")]
    if k_eff > 0:
        def ringed(name: str, shape: Tuple[int, ...], note: str) -> Buffer:
            # the score's outputs: one slot per ring entry (score_ring), the chunk's slot ring_slot(name, ring)
            return Buffer(name, (ring,) + shape if ring > 1 else shape, torch.float32, "chunk",
                          note + (f", a ring of {ring}" if ring > 1 else ""))
        out.append(ringed("scores", (C, indexer_cost.score_ld(T)), "fp32 scores of the chunk's visible key tiles"))
        if writes_group_maxima(impl, quant, heads, dim, topk, packed, fp8_mma):
            cap = indexer_cost.select_capacity(topk)
            out.append(ringed("gmax", (C, cap), f"each row's {cap:,} group maxima, written by the score for the "
                                                f"selection's threshold"))
        if impl["indexer.select"] != "torch":
            out.append(Buffer("cand", (C, indexer_cost.candidate_slots(topk)), torch.int32, "chunk",
                              "top-k candidates: the columns >= tau of each row segment"))
    if keys_width:
        out.append(Buffer("keys", (C, keys_width), torch.int32, "chunk",
                          f"key lists: {window} window rows + {keys_width - window} selected rows"))
    return out


def _compress_call(spec: Pipeline, c, role: str, out: str, impl: dict, consts: dict, rope_use: str, B: int,
                   T: int, row_seg: Optional[dict] = None) -> Call:
    quant = role_quant(spec, role)
    return OPS["compressor.compress"].call(
        impl["compressor.compress"],
        {"values": R(f"{role}_kv"), "gate": R(f"{role}_gate"), "ape": R(f"{role}_ape"), "norm": R(f"{role}_norm"),
         "out": R(out), **compressor_params(c), **table_args(consts, rope_use), **quant, **(row_seg or {})},
        dict(batch=B, rows=T, ratio=c.ratio, dim=c.dim, overlap=c.overlap),
        f"T = S // {c.ratio} rows" + (", Hadamard-rotated" if c.hadamard else "")
        + (f", {quant['quant_format'].upper()} step fused" if quant else ""))


def kv_rows_call(spec: Pipeline, impl: dict, src: str, out: str, rows: int) -> Call:
    """out <- the raw kv rows, through their quantisation step when the spec has one (a plain copy else)."""
    a = spec.attention
    if a.kv_quant is None:
        return OPS["glue.copy"].call(impl["glue.copy"], {"src": R(src), "out": R(out)})
    return OPS["quant.rows"].call(
        impl["quant.rows"], {"src": R(src), "out": R(out), "fmt": a.kv_quant.format, "block": a.kv_quant.block,
                             "channels": a.kv_quant_channels},
        dict(rows=rows, dim=a.qk_dim),
        f"{a.kv_quant.format.upper()} step on the first {a.kv_quant_channels} channels, blocks of {a.kv_quant.block}")


def pack_keys(impl: dict, src: str, B: int, T: int, dim: int, q: Quant,
              fp8_mma: bool = False) -> Tuple[List[Buffer], Call]:
    """The FP8 operand of the quantised score: buffers k8 [B, T, dim] and k_scale [B, T], and the call that
    fills them from the index keys `src` (the step `q`, then the packing; `fp8_mma`: Indexer.fp8_mma)."""
    bufs = [Buffer("k8", (B, T, dim), operand_dtype(impl["quant.pack_keys"], q, fp8_mma), "program",
                   "index keys packed: e4m3 grid values"),
            Buffer("k_scale", (B, T), torch.float32, "program", "index keys packed: a power-of-two scale per row")]
    call = OPS["quant.pack_keys"].call(
        impl["quant.pack_keys"], {"x": R(src), "x8": R("k8"), "x_scale": R("k_scale"), "fmt": q.format,
                                  "block": q.block},
        dict(rows=B * T, dim=dim),
        f"{q.format.upper()} step (blocks of {q.block}) + e4m3-grid packing of {T:,} keys")
    return bufs, call


def operand_dtype(backend: str, q: Quant, fp8_mma: bool = False) -> torch.dtype:
    """The packed operands' dtype: the MMA's (quant.formats.keys_dtype; `fp8_mma`: Indexer.fp8_mma); the
    interpreter has no exact FP8 stores, so there the packed values live in fp32 (the same values)."""
    return torch.float32 if backend == "interpret" else keys_dtype(q.format, fp8_mma)


def walk_calls(nodes: List[Node]):
    for n in nodes:
        if isinstance(n, Loop):
            yield from walk_calls(n.body)
        else:
            yield n


def materialize_bytes(spec: Pipeline, batch: int, seq_len: int) -> Dict[str, int]:
    """What the naive schedule of the public reference code holds at once (beyond inputs); nothing
    for layers without an indexer."""
    if spec.indexer is None:
        return {}
    T = spec.num_compressed(seq_len)
    hi = getattr(spec.indexer, "heads", 1)       # a self-index scores one head-summed query
    return {
        "scores [B,S,HI,T] fp32 (einsum output)": batch * seq_len * hi * T * 4,
        "scores [B,S,T] fp32 (after the head sum)": batch * seq_len * T * 4,
        "causal half of [B,S,T] fp32": batch * seq_len * T * 2,
    }


def compose_indexer(heads: int, dim: int, topk: int, ratio: int, batch: int, seq_len: int, chunk: int,
                    backend: str = "cuda", dtype: torch.dtype = torch.bfloat16,
                    quant: Optional[Quant] = None, overlap: bool = defaults.OVERLAP_SCORES,
                    score_rounding: str = "fp32", fp8_mma: bool = False) -> Program:
    """The standalone indexer (csa_dsl.indexer_topk): top-k row ids [B, S, K] of given index keys idx_k
    [B, T, DI], the same score and select calls as the full program's. `dtype`: of idx_q and idx_k
    (fp32 only for the interpreter's tests). `quant`: the indexer's quantisation (idx_q and idx_k go
    through it; the score runs on FP8 operands). `overlap`: as in compose. `score_rounding` and `fp8_mma`: as
    Indexer's."""
    check_score_options(score_rounding, fp8_mma, quant)
    round_bf16 = score_rounding == "bf16"
    B, S = batch, seq_len
    T = S // ratio
    K = min(topk, T)
    C = int(min(chunk, S))
    consts = {"B": B, "S": S, "T": T, "C": C, "m": ratio, "K": K}
    bufs = {
        "idx_q": Buffer("idx_q", (B, S, heads, dim), dtype, "input"),
        "idx_w": Buffer("idx_w", (B, S, heads), torch.float32, "input"),
        "idx_k": Buffer("idx_k", (B, T, dim), dtype, "input"),
        "ids": Buffer("ids", (B, S, K), torch.int32, "output", "selected row ids, -1 padded"),
    }
    impl = {name: backend for name in OPS}
    ring = score_ring(impl, overlap, K, S, C)
    for bf in chunk_buffers(impl, C=C, T=T, k_eff=K, topk=topk, ring=ring, quant=quant, heads=heads, dim=dim,
                            fp8_mma=fp8_mma):
        bufs[bf.name] = bf
    body: List[Node] = []
    if quant is not None and K > 0:
        pbufs, pcall = pack_keys(impl, "idx_k", B, T, dim, quant, fp8_mma)
        bufs.update({bf.name: bf for bf in pbufs})
        body.append(pcall)
    inner = select_calls(impl, heads=heads, dim=dim, topk=topk, ratio=ratio, k_eff=K, T=T, C=C,
                         idx_q="idx_q[b, s0:s1]", idx_w="idx_w[b, s0:s1]", k="idx_k[b]", keys="ids[b, s0:s1]",
                         idx_offset=0, window=0, has_cand="cand" in bufs, quant=quant, ring=ring,
                         has_gmax="gmax" in bufs, round_bf16=round_bf16) if K > 0 else []
    if inner:
        body.append(Loop("b", E(0), E("B"), E(1), [
            Loop("s0", E(0), E("S"), E("C"), inner, chunk_binds(ring), progress=True)]))
    return Program(name="indexer", consts=consts, buffers=bufs, body=body, outputs=("ids",),
                   kernels=kernel_names(sorted({c_.op for c_ in walk_calls(body)})),
                   notes={"decisions": [overlap_note(bufs["scores"])]} if ring > 1 else {})
