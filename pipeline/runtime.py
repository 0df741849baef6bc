"""A small runtime that executes a composed program (pipeline IR) on a backend.

Every buffer of the program is allocated here, once, with the planner's shapes;
every call writes into those buffers, so the memory the planner printed is the
memory the forward uses.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Dict, Optional

import torch

from csa_dsl.spec import Pipeline

from . import reference as ref
from .ir import Call, Loop, Program


class Runtime:
    def __init__(self, spec: Pipeline, program: Program, backend, device, profile: bool = False):
        self.spec, self.program, self.backend, self.device = spec, program, backend, torch.device(device)
        self.profile = profile
        self.times: Dict[str, float] = defaultdict(float)

    def _alloc(self, name: str) -> torch.Tensor:
        b = self.program.buffers[name]
        return torch.empty(b.shape, dtype=b.dtype, device=self.device)

    def run(self, inputs: Dict[str, torch.Tensor], return_indices: bool = False, progress: bool = False):
        spec, prog = self.spec, self.program
        a, ix = spec.attention, spec.indexer
        B, S, C = prog.batch, prog.seq_len, prog.chunk
        T = spec.num_compressed(S)
        W, K = a.window, spec.topk_eff(S)
        env = {"out": self._alloc("out")}
        for name in ("kv_all", "k_idx", "scores", "cand", "keys"):
            if name in prog.buffers:
                env[name] = self._alloc(name)
        idx_all = torch.empty(B, S, W + K, dtype=torch.int32, device=self.device) if return_indices else None
        sink = inputs.get("sink") if a.sink else None
        kv_rows = env.get("kv_all", inputs["kv"])
        k_idx = env.get("k_idx", inputs.get("idx_k"))
        bk = self.backend
        bar = _progress_bar(B * -(-S // C), f"{spec.name} S={S:,}") if progress else None

        for node in prog.body:
            if isinstance(node, Call):
                if node.op == "copy_kv":
                    self._timed(node, lambda: env["kv_all"][:, :S].copy_(inputs["kv"]))
                elif node.op == "compress_kv":
                    c = spec.compressor
                    for b in range(B):
                        self._timed(node, lambda b=b: bk.compress(
                            inputs["cmp_kv"][b:b + 1], inputs["cmp_gate"][b:b + 1], inputs["cmp_ape"],
                            inputs["cmp_norm"], c, env["kv_all"][b:b + 1, S:]))
                elif node.op == "compress_idx":
                    c = ix.compressor
                    for b in range(B):
                        self._timed(node, lambda b=b: bk.compress(
                            inputs["idx_kv"][b:b + 1], inputs["idx_gate"][b:b + 1], inputs["idx_ape"],
                            inputs["idx_norm"], c, env["k_idx"][b:b + 1]))
                else:
                    raise RuntimeError(f"runtime: unknown top-level op {node.op!r}")
                continue
            assert isinstance(node, Loop) and node.var == "b"
            inner = node.body[0].body
            for b in range(B):
                for s0 in range(0, S, C):
                    n = min(C, S - s0)
                    keys = idx_all[b, s0:s0 + n] if idx_all is not None else env["keys"][:n]
                    for call in inner:
                        self._step(call, inputs, env, b, s0, n, T, W, K, keys, kv_rows, k_idx, sink)
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        out = env["out"]
        return (out, idx_all) if return_indices else out

    def _step(self, call: Call, inputs, env, b, s0, n, T, W, K, keys, kv_rows, k_idx, sink):
        spec, bk = self.spec, self.backend
        a, ix, m = spec.attention, spec.indexer, spec.ratio
        S = self.program.seq_len
        op = call.op
        if op == "score":
            if K == 0:
                return
            f = lambda: bk.score(inputs["idx_q"][b, s0:s0 + n], inputs["idx_w"][b, s0:s0 + n], k_idx[b],
                                 s0, m, env["scores"])
        elif op == "select":
            if K == 0:   # no compressed row yet: the key list is the window alone
                f = lambda: keys[:, :W].copy_(ref.window_indices(torch.arange(s0, s0 + n, device=self.device), W))
            else:
                f = lambda: bk.select(env["scores"], s0, n, m, K, ix.topk, keys,
                                      spec.selected_offset(S), W, env["cand"], T)
        elif op == "attention":
            f = lambda: bk.attention(inputs["q"][b, s0:s0 + n], kv_rows[b], keys, a.softmax_scale, a.v_dim, sink,
                                     env["out"][b, s0:s0 + n])
        elif op == "inverse_rope":
            f = lambda: bk.rope(env["out"][b, s0:s0 + n], a.inverse_rope, s0)
        else:
            raise RuntimeError(f"runtime: unknown op {op!r}")
        self._timed(call, f)

    def _timed(self, call: Call, f):
        if not self.profile:
            f()
            return
        if self.device.type == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            f()
            e1.record()
            e1.synchronize()
            self.times[call.op] += e0.elapsed_time(e1)
        else:
            t = time.perf_counter()
            f()
            self.times[call.op] += (time.perf_counter() - t) * 1e3


def _progress_bar(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety, never a dependency of correctness
        return None
    return tqdm(total=total, desc=desc, unit="chunk", leave=False)
