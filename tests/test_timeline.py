"""csa_dsl.timeline: the stage of a kernel name, busy time and the sets of stages running at once, on a
hand-made trace (no GPU)."""
from csa_dsl import timeline

US = 1000.0     # the trace's unit is the microsecond: 1 ms


def _kernel(name, stream, t0_ms, t1_ms, correlation):
    return {"cat": "kernel", "name": name, "ts": t0_ms * US, "dur": (t1_ms - t0_ms) * US,
            "args": {"stream": stream, "correlation": correlation}}


def _launch(t_ms, correlation):
    return {"cat": "cuda_runtime", "name": "cuLaunchKernelEx", "ts": t_ms * US, "dur": 5.0,
            "args": {"correlation": correlation}}


def test_stage_of_names_the_kernels_the_programs_launch():
    assert timeline.stage_of("_score_kernel") == "score" and timeline.stage_of("_score_gluon") == "score"
    assert timeline.stage_of("_select_kernel") == "select"
    assert timeline.stage_of("sparse_mla_fwd_kernel_kernel") == "attention"
    assert timeline.stage_of("_pack_kernel") == "quantise"
    assert timeline.stage_of("_compress_kernel") == "compressor"
    assert timeline.stage_of("void at::native::vectorized_elementwise_kernel<4, cos>") == "other"


def test_busy_and_concurrent_on_a_two_stream_trace():
    # stream 1: score 0-4, score 5-9; stream 2: select 3-6 (under both scores and the gap), attention 10-12
    events = [_kernel("_score_kernel", 1, 0, 4, 1), _kernel("_score_kernel", 1, 5, 9, 2),
              _kernel("_select_kernel", 2, 3, 6, 3), _kernel("sparse_mla_fwd_kernel_kernel", 2, 10, 12, 4)]
    host = {}
    events += [_launch(ev["ts"] / US - 0.5 * (i + 1), ev["args"]["correlation"]) for i, ev in enumerate(events)]
    ks = timeline.kernels_of(events, host)
    assert [k[0] for k in ks] == ["_score_kernel", "_select_kernel", "_score_kernel", "sparse_mla_fwd_kernel_kernel"]
    s = timeline.summary(ks)
    assert s["span_ms"] == 12.0
    assert s["busy_ms"] == {"score": 8.0, "select": 3.0, "attention": 2.0}
    assert s["kernel_ms"] == {"score": 8.0, "select": 3.0, "attention": 2.0}
    assert s["launches"] == {"score": 2, "select": 1, "attention": 1}
    assert s["concurrent_ms"] == {"score": 6.0, "score + select": 2.0, "attention": 2.0, "select": 1.0,
                                  "(gap)": 1.0}
    assert abs(sum(s["concurrent_ms"].values()) - s["span_ms"]) < 1e-9
    # launched 0.5, 1.0, 1.5, 2.0 ms before their starts (in the events' order above)
    assert host["launch_to_start_ms"]["attention"]["median"] == 2.0
    assert host["launch_to_start_ms"]["score"]["min"] == 0.5
    assert host["api"]["cuLaunchKernelEx"]["count"] == 4


def test_busy_counts_overlapping_kernels_of_one_stage_once():
    ks = [("_score_kernel", 1, 0.0, 4 * US), ("_score_kernel", 2, 2 * US, 6 * US), ("_score_kernel", 1, 8 * US, 9 * US)]
    assert timeline.busy(ks) == {"score": 7.0}
    assert timeline.concurrent(ks) == {"score": 7.0, "(gap)": 2.0}
