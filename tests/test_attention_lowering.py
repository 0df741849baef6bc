"""CPU tests of the TileLang sparse MLA kernel: it lowers to sm_90a CUDA with the intended
structure, and the wrapper rejects bad inputs (with useful messages) before needing a GPU."""

import functools
import os
import re
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels_tilelang.sparse_mla import kernel as sm  # noqa: E402
from kernels_tilelang.sparse_mla.ir import lower_sparse_mla_fwd  # noqa: E402
from kernels_tilelang.sparse_mla.kernel import sparse_mla_fwd  # noqa: E402

# (heads, dim_qk, dim_v, num_indices, with_sink)
LAYOUTS = {
    "v4-flash": (64, 512, 512, 640, True),
    "v3.2": (128, 576, 512, 2048, False),
    "v4-pro": (128, 512, 512, 1152, True),
}


@functools.lru_cache(maxsize=None)
def _lowered(name, variant, return_lse=False):
    h, d, dv, ni, sink = LAYOUTS[name]
    return lower_sparse_mla_fwd(h, d, dv, ni, sink, variant=variant, arch="sm_90a",
                                return_lse=return_lse)


def _kernel_signature(src):
    m = re.search(r"__global__ void __launch_bounds__\((\d+), (\d+)\) (\w+)\(([^)]*)\)", src)
    assert m, "no kernel definition in the generated source"
    return int(m.group(1)), m.group(4)


# ------------------------------------------------------------------ warp-specialised variant
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_ws_lowers_to_wgmma_and_mbarrier_pipeline(name):
    h, d, dv, ni, sink = LAYOUTS[name]
    r = _lowered(name, "ws", return_lse=(name == "v4-flash"))
    src = r["cuda"]
    threads, params = _kernel_signature(src)
    assert threads == 384  # 2 consumer warpgroups + 1 producer warpgroup
    # tensor cores: Hopper wgmma, for Q K^T (64 keys wide) and P V (two 256-wide halves)
    assert "tl::wgmma_ss<" in src
    assert re.search(r"wgmma_ss<[^>]*, 64, 64, 16,", src), "Q K^T wgmma m64n64k16 missing"
    assert re.search(r"wgmma_ss<[^>]*, 64, 256, 16,", src), "P V wgmma m64n256k16 missing"
    # mbarrier pipeline: producer cp.async arrives, consumers wait on full/free barriers
    assert "mbarrier_cp_async_arrive_noinc(bar_kv_full[" in src
    assert "mbarrier_cp_async_arrive_noinc(bar_q[0])" in src
    for b in ("bar_kv_full", "bar_kv_free", "bar_p_full", "bar_p_free", "bar_fin", "bar_q"):
        assert f"{b}[" in src and ".init(" in src
        assert re.search(rf"{b}\[[^\]]*\]\.wait\(", src), f"nobody waits on {b}"
    assert re.search(r"bar_kv_free\[\w+\]\.arrive\(\)", src)
    assert "bar_p_full[0].arrive()" in src and "bar_p_free[0].arrive()" in src
    assert "bar_kv_full[0].init(128)" in src and "bar_kv_free[0].init(256)" in src
    # the ring really has two stages (second stage addressed through the descriptor)
    assert "increase_descriptor_offset<int>(desc_b, (st * " in src
    # warp specialisation: register re-allocation per role
    assert "warpgroup_reg_alloc<240>" in src and "warpgroup_reg_alloc<168>" in src
    assert "warpgroup_reg_dealloc<80>" in src
    # gathered rows are zero-fill predicated cp.async (-1 never read); proxy fences for wgmma
    assert "cp_async_gs_conditional<16>" in src
    assert src.count("tl::fence_proxy_async()") >= 3
    # the async Q K^T accumulator is fenced (32 regs/thread) right after wgmma.wait_group
    assert re.search(r"wait_wgmma<0>\(\);\s*tl::warpgroup_fence_operand\(reinterpret_cast<float\*>"
                     r"\(acc_s \+ 0\), 32\);", src)
    # 64-bit global offsets (q has 8.6e9 elements at S = 262,144)
    kv_load = re.search(r"cp_async_gs_conditional<16>\(.*?KV\[(.*?)\]\)\)", src)
    assert kv_load and "int64_t" in kv_load.group(1)
    # dynamic batch / Sq / R: one kernel for every length
    for v in ("int B", "int R", "int Sq", "float sm_scale"):
        assert v in params
    assert ("const float* __restrict__ Sink" in params) == sink
    # shared memory fits the 227 KiB opt-in limit of sm_90
    assert r["smem_bytes"] is not None and r["smem_bytes"] <= sm.SM90_SMEM_LIMIT
    assert r["smem_bytes"] == sm.smem_bytes_estimate(d, dv, "ws")       # the buffers it declares, no more
    # the TIR view for `csa-dsl ir --level tir`
    assert "T.prim_func" in r["tir"] or "prim_func" in r["tir"]


def test_ws_lse_is_written_only_when_asked():
    src = _lowered("v4-flash", "ws", return_lse=True)["cuda"]
    assert "float* __restrict__ Lse" in src
    assert re.search(r"Lse\[.*\] = lse_frag\[", src)
    src_no = _lowered("v4-pro", "ws")["cuda"]  # same kernel family, no LSE output
    assert "Lse" not in src_no


def test_ws_tail_dims_only_for_576():
    src576 = _lowered("v3.2", "ws")["cuda"]
    src512 = _lowered("v4-pro", "ws")["cuda"]
    assert "Kt_s" in src576 and "Qt_s" in src576
    assert "Kt_s" not in src512


# ------------------------------------------------------------------ T.Pipelined variant
@pytest.mark.parametrize("name", ["v4-flash", "v3.2"])
def test_pipelined_variant_lowers_with_guarded_cp_async(name):
    r = _lowered(name, "pipelined")
    src = r["cuda"]
    threads, params = _kernel_signature(src)
    assert threads == 256
    assert "tl::wgmma_ss<" in src
    # two-stage software pipeline of cp.async groups
    assert "tl::cp_async_commit();" in src and re.search(r"cp_async_wait<[12]>", src)
    # its declared buffers are a lower bound: T.Pipelined adds stages of its own
    assert r["smem_bytes"] >= sm.smem_bytes_estimate(LAYOUTS[name][1], LAYOUTS[name][2], "pipelined")
    # the gather is predicated: an empty slot (-1 -> row R) fails `< R` and reads nothing
    gathers = re.findall(r"cp_async_gs_conditional<16>\((.*?)\);\n", src)
    assert gathers
    assert all(re.search(r"< R\)", g) for g in gathers if "KV[" in g)
    assert r["smem_bytes"] <= sm.SM90_SMEM_LIMIT


# ------------------------------------------------------------------ shape classes
def test_padding_helpers():
    assert sm.padded_heads(16) == 64 and sm.padded_heads(64) == 64
    assert sm.padded_heads(128) == 128 and sm.padded_heads(96) == 128
    assert sm.padded_num_indices(640) == 640 and sm.padded_num_indices(1152) == 1152
    assert sm.padded_num_indices(1) == 128 and sm.padded_num_indices(2049) == 2176
    assert sm.kernel_dims(576, 512) == (576, 512) and sm.kernel_dims(512, 256) == (512, 512)


def test_builder_rejects_unsupported_classes():
    with pytest.raises(ValueError, match="multiple of 64"):
        sm.build_sparse_mla_fwd(32, 512, 512, 128, False, False, "ws")
    with pytest.raises(ValueError, match="multiple of 128"):
        sm.build_sparse_mla_fwd(64, 512, 512, 640 + 64, False, False, "ws")
    with pytest.raises(ValueError, match="variant"):
        sm.build_sparse_mla_fwd(64, 512, 512, 640, False, False, "fast")
    with pytest.raises(ValueError, match="dim_qk"):
        lower_sparse_mla_fwd(64, 640, 512, 640, False)
    with pytest.raises(ValueError, match="sm_90a"):
        lower_sparse_mla_fwd(64, 512, 512, 640, False, arch="sm_80")


# ------------------------------------------------------------------ the seesaw split
@pytest.mark.parametrize("variant,dim", [("seesaw", 512), ("seesaw-bounded", 512), ("seesaw-window", 512),
                                         ("seesaw", 576), ("seesaw-bounded", 576)])
def test_seesaw_splits_the_work_evenly(variant, dim):
    """Both consumers (216 registers each, producer 72: 384 x 168 in all) compute Q K^T, each on its own stage
    of the ring, pass the running max on (WG0 to WG1 and back) and publish their P, and each runs two 64x256
    P V wgmmas per pair of blocks (its own block's and the other's) into its own value half: WG0 its first
    from registers, issued before it waits for WG1's max; both multiply block 0 first and free its stage
    before block 1's. With V3.2's 576-dim rows each Q K^T has a second wgmma for the RoPE tail, and the P
    tiles live in the tail's ring: Q, its tail and the two stages fit the SM's shared memory with no P tile
    of their own."""
    r = lower_sparse_mla_fwd(64, dim, 512, 640 if variant != "seesaw-window" else 128, True, variant=variant,
                             arch="sm_90a", rope=(448, 64, False))
    src = r["cuda"]
    threads, _ = _kernel_signature(src)
    assert threads == 384 and r["smem_bytes"] <= sm.SM90_SMEM_LIMIT
    if dim == 576:      # Q, its tail and two stages of 64 rows with their tails: nothing else of that size
        assert r["smem_bytes"] < 2 * (64 * 576 + 2 * 64 * 576) + 64 * 64 * 2
    assert r["smem_bytes"] == sm.smem_bytes_estimate(dim, 512, variant)
    assert src.count("tl::warpgroup_reg_alloc<216>()") == 2 and "tl::warpgroup_reg_dealloc<72>()" in src
    assert 216 * 256 + 72 * 128 <= 384 * 168
    assert len(re.findall(r"wgmma_ss<[^>]*, 64, 64, 16,", src)) == 2 * (1 + (dim == 576))   # a Q K^T per consumer
    assert len(re.findall(r"wgmma_ss<[^>]*, 64, 256, 16,", src)) == 3         # two P V per consumer,
    assert len(re.findall(r"wgmma_rs<[^>]*, 64, 256, 16,", src)) == 1         # WG0's first from registers
    for c in (0, 1):
        assert f"bar_kv_full[{c}].wait(" in src
        assert f"bar_mx[{c}].arrive()" in src and re.search(rf"bar_mx\[{c}\]\.wait\(", src)
        assert f"bar_p[{c}].arrive()" in src and re.search(rf"bar_p\[{c}\]\.wait\(", src)
    assert src.count("bar_kv_free[0].arrive()") == 2 and src.count("bar_kv_free[1].arrive()") == 2
    wg0 = src[src.index("bar_kv_full[0].wait("):src.index("bar_kv_full[1].wait(")]
    wg1 = src[src.index("bar_kv_full[1].wait("):]
    assert wg0.index("wgmma_rs<") < wg0.index("bar_mx[1].wait(") < wg0.index("bar_p[0].arrive()")
    assert wg1.index("bar_mx[0].wait(") < wg1.index("bar_mx[1].arrive()")     # m1 = max(m0, block 1's)
    for part in (wg0, wg1):
        assert part.index("bar_kv_free[0].arrive()") < part.index("bar_kv_free[1].arrive()")
    assert "bar_kv_free[0].init(256)" in src
    assert "__fmul_rn" in src                                               # the fused inverse RoPE
    assert "__syncthreads();" not in src[src.index("warpgroup_reg_alloc"):]  # only named barriers inside


# ------------------------------------------------------------------ the window's persistent ring kernel
@pytest.mark.parametrize("packed", [False, True])
def test_ring_window_kernel_lowers_to_a_persistent_loop(packed):
    """seesaw-ring: each CTA loops over its span of queries; per query both consumers run one Q K^T and two
    P V wgmmas, chained as the listed seesaw's (WG0's first P V from registers, issued before it waits for
    WG1's max; WG1's max taken over WG0's); the producer writes one 8-byte piece of the added row per
    thread (a whole refill only when a sequence starts), and the output leaves as eight 64-channel TMA
    stores, waited for only two chunks later (wait_group.read 1), except before the rotated chunk. Packed:
    positions from the segment rows."""
    r = lower_sparse_mla_fwd(64, 512, 512, 128, True, variant="seesaw-ring-seg" if packed else "seesaw-ring",
                             arch="sm_90a", rope=(448, 64, packed))
    src = r["cuda"]
    threads, sig = _kernel_signature(src)
    assert threads == 384 and r["smem_bytes"] <= sm.SM90_SMEM_LIMIT and "span" in sig
    assert r["smem_bytes"] == sm.smem_bytes_estimate(512, 512, "seesaw-ring-seg" if packed else "seesaw-ring")
    assert src.count("tl::warpgroup_reg_alloc<216>()") == 2 and "tl::warpgroup_reg_dealloc<72>()" in src
    assert len(re.findall(r"wgmma_ss<[^>]*, 64, 64, 16,", src)) == 2
    assert len(re.findall(r"wgmma_ss<[^>]*, 64, 256, 16,", src)) == 3
    assert len(re.findall(r"wgmma_rs<[^>]*, 64, 256, 16,", src)) == 1
    loop = src[src.index("warpgroup_reg_alloc"):]
    wg0 = loop[:loop.index("warpgroup_reg_alloc", 1)]
    wg1 = loop[loop.index("warpgroup_reg_alloc", 1):]
    assert wg0.index("wgmma_rs<") < wg0.index("bar_mx[1].wait(") < wg0.index("bar_p[0].arrive()")
    assert wg1.index("bar_mx[0].wait(") < wg1.index("bar_mx[1].arrive()") and "bar_mx[1].wait(" not in wg1[
        :wg1.index("bar_p[1].arrive()")]
    assert len(re.findall(r"for \(int i\w* = 0; i\w* < min\(span, \(Sq - ", src)) == 2    # the consumers
    assert "for (int i_" in src and re.search(r"for \(int i_\d+ = 1; i_\d+ < min\(span,", src)  # the producer
    assert "Indices" not in src and ("Seg[" in src) == packed
    for b in ("bar_q_free", "bar_kv_free"):
        assert f"{b}[0].init(256)" in src
    assert re.search(r"\*\(uint2\*\)\(\(\(bfloat16_t\*\)K_s\) \+", src)        # the added row, from registers
    assert src.count("tma_store(Out_desc") == 8 and src.count("tma_store_wait<1, true>();") >= 8
    assert "__fadd_rn(__fmul_rn(a, c), __fmul_rn(b, sn))" in src
    assert "__syncthreads();" not in src[src.index("warpgroup_reg_alloc"):]


def test_ring_window_ids_place_each_row_in_its_slot():
    W = 8
    pos = torch.arange(0, 40)
    ids = sm.ring_window_ids(pos, W)
    for p in range(40):
        want = [-1] * W
        for r in range(max(0, p - W + 1), p + 1):
            want[r % W] = r
        assert ids[p].tolist() == want, p
    assert sm.ring_window(512, 128) and not sm.ring_window(576, 128) and not sm.ring_window(512, 64)
    assert not sm.ring_window(512, 128, "ws")
    q, kv = torch.zeros(1, 6, 64, 512, dtype=torch.bfloat16), torch.zeros(1, 6, 512, dtype=torch.bfloat16)
    seg = torch.zeros(6, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match="packed batch's implicit windows .* run on the ring kernel only"):
        sm.validate_sparse_mla_inputs(q, kv, None, 0.1, 512, window=64, rope_seg=seg, need_cuda=False,
                                      variant="seesaw")
    sm.validate_sparse_mla_inputs(q, kv, None, 0.1, 512, window=128, rope_seg=seg, need_cuda=False, variant="seesaw")


def test_seesaw_limits_and_default():
    assert sm.DEFAULT_VARIANT == "seesaw"
    with pytest.raises(ValueError, match="use 'seesaw'"):      # short bounded lists walk every block
        sm.build_sparse_mla_fwd(64, 512, 512, 256, True, False, "seesaw-bounded")
    with pytest.raises(ValueError, match="seesaw-ring takes dim_qk == dim_v"):
        sm.build_sparse_mla_fwd(64, 576, 512, 128, True, False, "seesaw-ring")
    q, kv, idx, s = _inputs(D=576)
    for variant in ("seesaw", "ws", None):          # every variant takes 576-dim rows
        with pytest.raises(ValueError, match="needs a CUDA device"):
            sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, variant=variant)


# ------------------------------------------------------------------ the fused inverse RoPE
@pytest.mark.parametrize("variant,seg", [("ws", False), ("ws-bounded", True), ("ws-window", False),
                                         ("seesaw", True)])
def test_fused_inverse_rope_lowers_into_the_second_warpgroups_epilogue(variant, seg):
    """The rotated channels [448, 512) are read from the output tile, rotated with products and sums that
    nvcc cannot contract (the Triton RoPE's bits), written to the dead P tile and stored from there; the
    rest of the second value half is stored from the output tile as before."""
    src = lower_sparse_mla_fwd(64, 512, 512, 640, True, variant=variant, arch="sm_90a", rope=(448, 64, seg))["cuda"]
    plain = _lowered("v4-flash", "ws")["cuda"]
    assert "__fmul_rn" not in plain and "RopeCos[" not in plain
    assert "__fadd_rn(__fmul_rn(a, c), __fmul_rn(b, sn))" in src
    assert "__fsub_rn(__fmul_rn(b, c), __fmul_rn(a, sn))" in src
    # from the P tile (seesaw: the second consumer's, 4,096 elements in)
    assert re.search(r"tma_store\(Out_desc, \(&\(\(\(bfloat16_t\*\)P_s\)\[(0|4096)\]\)\), 448,", src)
    assert len(re.findall(r"tma_store\(Out_desc, [^;]*Q_s[^;]*\), \(\(i_\d+ \* 64\) \+ 256\)", src)) == 1
    assert ("Seg[" in src) == seg                       # a packed batch: the position from the segment rows
    # one barrier before the rotation and one before the store, none per pair of the loop
    loop = src[src.index("__fmul_rn") - 3000:src.index("__fmul_rn")]
    assert loop.count("__sync_thread_partial") == 1


def test_fused_inverse_rope_limits():
    assert sm.rope_fusable(512, 64) and sm.rope_fusable(320, 64)
    assert not sm.rope_fusable(300, 64)           # channels [236, 300) reach into the first value half
    assert not sm.rope_fusable(512, 128)          # more channels than the P tile's 64 columns
    assert not sm.rope_fusable(512, 0) and not sm.rope_fusable(512, 63)
    with pytest.raises(ValueError, match="fused inverse RoPE"):
        sm.build_sparse_mla_fwd(64, 512, 512, 640, True, False, "pipelined", rope=(448, 64, False))
    with pytest.raises(ValueError, match="fused inverse RoPE"):
        sm.build_sparse_mla_fwd(64, 512, 512, 640, True, False, "ws", rope=(128, 64, False))


def test_inverse_rope_argument_errors():
    q, kv, idx, s = _inputs(Sq=4)
    cos, sin = torch.zeros(8, 32), torch.zeros(8, 32)
    with pytest.raises(ValueError, match="both tables"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, rope_cos=cos)
    with pytest.raises(ValueError, match="pass rope_cos and rope_sin with it"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, rope_seg=torch.zeros(4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="position 9 is needed"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, pos0=6, rope_cos=cos, rope_sin=sin)
    with pytest.raises(ValueError, match="fp32 table"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, rope_cos=cos.double(), rope_sin=sin)
    with pytest.raises(ValueError, match="rot_dim <= 32"):
        sparse_mla_fwd(q, kv, idx, 0.05, 32, sink=s, rope_cos=cos, rope_sin=sin)
    with pytest.raises(ValueError, match=r"rope_seg must be \[4, 4\]"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, rope_cos=cos, rope_sin=sin,
                       rope_seg=torch.zeros(3, 4, dtype=torch.int32))
    q2, kv2, idx2, _ = _inputs(B=2)
    with pytest.raises(ValueError, match="B = 1"):
        sparse_mla_fwd(q2, kv2, idx2, 0.05, 512, sink=s, rope_cos=cos, rope_sin=sin,
                       rope_seg=torch.zeros(4, 4, dtype=torch.int32))
    # valid tables: only the device is left to complain about
    with pytest.raises(ValueError, match="needs a CUDA device"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, pos0=4, rope_cos=cos, rope_sin=sin)


def test_reference_attend_rotates_like_the_rope_reference():
    """naive.attend with the tables = naive.attend, then the inverse RoPE of rope_rows_bf16 (which builds its
    own cos/sin from the positions), padded and with a packed batch's positions."""
    from kernels_tilelang.sparse_mla import naive as att_naive
    from kernels_triton.rope.naive import rope_rows_bf16
    from kernels_triton.rope.tables import Rotary, cos_sin
    torch.manual_seed(0)
    q, kv, idx, s = _inputs(Sq=6, H=4, NI=8)
    rot = Rotary(dim=64, base=10000.0)
    cos, sin = cos_sin(rot, torch.arange(40))
    args = (q[0], kv[0], idx[0])
    plain = torch.empty(6, 4, 512, dtype=torch.bfloat16)
    att_naive.attend(*args, plain, s, scale=0.05, v_dim=512, pos0=30)
    rotated = torch.empty_like(plain)
    att_naive.attend(*args, rotated, s, scale=0.05, v_dim=512, pos0=30, rope_cos=cos, rope_sin=sin)
    assert torch.equal(rotated, rope_rows_bf16(plain, rot, torch.arange(30, 36), inverse=True, heads=True))
    assert not torch.equal(rotated, plain)
    seg = torch.tensor([[5, 0, 0, 9], [6, 0, 0, 9], [7, 0, 0, 9], [0, 3, 0, 2], [1, 3, 0, 2], [2, 3, 0, 2]],
                       dtype=torch.int32)
    packed = torch.empty_like(plain)
    att_naive.attend(*args, packed, s, scale=0.05, v_dim=512, pos0=0, rope_cos=cos, rope_sin=sin, seg=seg)
    assert torch.equal(packed, rope_rows_bf16(plain, rot, seg[:, 0].long(), inverse=True, heads=True))


# ------------------------------------------------------------------ wrapper validation (CPU)
def _inputs(B=1, Sq=4, H=16, D=512, R=32, NI=8, sink=True):
    q = torch.randn(B, Sq, H, D).to(torch.bfloat16)
    kv = torch.randn(B, R, D).to(torch.bfloat16)
    idx = torch.randint(-1, R, (B, Sq, NI), dtype=torch.int32)
    s = torch.randn(H, dtype=torch.float32) if sink else None
    return q, kv, idx, s


@pytest.fixture(autouse=True)
def _no_compile(monkeypatch):
    """Validation must finish before anything compiles or touches CUDA."""
    def boom(*a, **k):
        raise AssertionError("compiled before validation finished")
    monkeypatch.setattr(sm, "_compiled", boom)


def test_wrong_q_dtype_mentions_bf16():
    q, kv, idx, s = _inputs()
    with pytest.raises(TypeError, match="bf16"):
        sparse_mla_fwd(q.float(), kv, idx, 0.05, 512, sink=s)
    with pytest.raises(TypeError, match="kv must be torch.bfloat16"):
        sparse_mla_fwd(q, kv.half(), idx, 0.05, 512, sink=s)


def test_wrong_index_and_sink_dtypes():
    q, kv, idx, s = _inputs()
    with pytest.raises(TypeError, match="int32"):
        sparse_mla_fwd(q, kv, idx.long(), 0.05, 512, sink=s)
    with pytest.raises(TypeError, match="fp32"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s.bfloat16())
    with pytest.raises(TypeError, match="torch.Tensor"):
        sparse_mla_fwd([1, 2], kv, idx, 0.05, 512)


def test_rank_and_size_errors():
    q, kv, idx, s = _inputs()
    with pytest.raises(ValueError, match=r"q must have shape \[B, Sq, H, D\]"):
        sparse_mla_fwd(q[0], kv, idx, 0.05, 512, sink=s)
    with pytest.raises(ValueError, match="one latent head"):
        sparse_mla_fwd(q, kv[:, :, None], idx, 0.05, 512, sink=s)
    with pytest.raises(ValueError, match="kv must be"):
        sparse_mla_fwd(q, torch.cat([kv, kv]), idx, 0.05, 512, sink=s)
    with pytest.raises(ValueError, match="indices must be"):
        sparse_mla_fwd(q, kv, idx[:, :2], 0.05, 512, sink=s)
    with pytest.raises(ValueError, match="NI >= 1"):
        sparse_mla_fwd(q, kv, idx[:, :, :0], 0.05, 512, sink=s)
    with pytest.raises(ValueError, match=r"sink must have shape \[H=16\]"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=torch.zeros(8))


def test_dim_errors():
    q, kv, idx, s = _inputs(D=256)
    with pytest.raises(ValueError, match=r"dim_qk .* \(512, 576\)"):
        sparse_mla_fwd(q, kv, idx, 0.05, 256, sink=s)
    q, kv, idx, s = _inputs(D=576)
    with pytest.raises(ValueError, match="dim_v must be in"):
        sparse_mla_fwd(q, kv, idx, 0.05, 576, sink=s)
    with pytest.raises(ValueError, match="dim_v must be in"):
        sparse_mla_fwd(q, kv, idx, 0.05, 0, sink=s)
    with pytest.raises(TypeError, match="dim_v must be an int"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512.0, sink=s)


def test_contiguity_error_says_how_to_fix():
    q, kv, idx, s = _inputs()
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert not qt.is_contiguous()
    with pytest.raises(ValueError, match=r"q.contiguous\(\)"):
        sparse_mla_fwd(qt, kv, idx, 0.05, 512, sink=s)
    idx_t = idx.transpose(0, 1).contiguous().transpose(0, 1) if idx.shape[0] > 1 else idx[..., ::2]
    with pytest.raises(ValueError, match=r"indices.contiguous\(\)"):
        sparse_mla_fwd(q, kv, idx_t, 0.05, 512, sink=s)


def test_scalar_and_variant_errors():
    q, kv, idx, s = _inputs()
    with pytest.raises(ValueError, match="positive finite"):
        sparse_mla_fwd(q, kv, idx, float("nan"), 512, sink=s)
    with pytest.raises(ValueError, match="positive finite"):
        sparse_mla_fwd(q, kv, idx, -1.0, 512, sink=s)
    with pytest.raises(TypeError, match="sm_scale"):
        sparse_mla_fwd(q, kv, idx, torch.tensor(0.1), 512, sink=s)
    with pytest.raises(ValueError, match="variant"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, variant="tma")


def test_out_buffer_errors():
    q, kv, idx, s = _inputs()
    ok = torch.empty(1, 4, 16, 512, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="out must be torch.bfloat16"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, out=ok.float())
    with pytest.raises(ValueError, match=r"out must have shape \[B, Sq, H, dim_v\]"):
        sparse_mla_fwd(q, kv, idx, 0.05, 256, sink=s, out=ok)
    with pytest.raises(ValueError, match=r"out.contiguous\(\)"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s,
                       out=ok.transpose(1, 2).contiguous().transpose(1, 2))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s, out=ok)


def test_numpy_scale_is_accepted():
    np = pytest.importorskip("numpy")
    q, kv, idx, s = _inputs()
    with pytest.raises(ValueError, match="needs a CUDA device"):  # i.e. the scale passed
        sparse_mla_fwd(q, kv, idx, np.float32(0.05), 512, sink=s)


def test_device_errors_come_last():
    q, kv, idx, s = _inputs()
    # a valid CPU call fails only on the device, saying what to do
    with pytest.raises(ValueError, match=r"needs a CUDA device.*\.cuda\(\)"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=s)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        sparse_mla_fwd(q, kv, idx, 0.05, 512, sink=None, return_lse=True, variant="pipelined")
    # a dtype error wins over the device error
    with pytest.raises(TypeError, match="bf16"):
        sparse_mla_fwd(q.float(), kv, idx, 0.05, 512, sink=s)
    # mixed devices are reported before "needs CUDA"
    with pytest.raises(ValueError, match="same device"):
        sparse_mla_fwd(q, kv.to("meta"), idx, 0.05, 512, sink=s)
