"""Every default of csa-dsl in one place: the CLI, the planner, the composer and the benchmarks
read them from here (kernel launch parameters stay with their kernels)."""
from __future__ import annotations

# sequence lengths `csa-dsl run` uses when --seq is not given
GPU_SEQ_LEN = 262_144          # the README's main job on a GPU
CPU_SEQ_LEN = 1_024            # without a GPU: the exact reference path at a small S

# memory
BUDGET_FRACTION = 0.8          # of the memory really available (driver free + the allocator's cache)
IR_PLAN_BUDGET = 8 * 2**30     # `csa-dsl ir --level plan` has no device to ask: plan for this budget

# query chunks the planner tries, largest first; per backend the largest worth having: on the
# GPU 2,048 queries keep every SM busy (larger chunks add memory, not speed); the torch and
# interpreter stages materialise per-chunk temporaries, so smaller chunks keep the CPU's memory low
CHUNK_CHOICES = (2048, 1024, 512, 256, 128, 64)
MAX_CHUNK = {"cuda": 2048, "interpret": 256, "torch": 256}

# the chunk loop: the indexer's scores on a side stream, one chunk ahead of the selection (Schedule.overlap)
OVERLAP_SCORES = True

# the standalone indexer (csa_dsl.indexer_topk, `csa-dsl bench indexer`): the chunk whose fp32
# score buffer is at most this big, never under INDEXER_MIN_CHUNK queries (256 score programs,
# about one full wave on 132 SMs)
INDEXER_SCORE_BUFFER = 256 * 2**20
INDEXER_MIN_CHUNK = 1024

# benchmarks: sequence lengths swept when --seq is not given
BENCH_SEQS = {
    "indexer": (32768, 65536, 131072, 262144, 524288, 1048576),
    "attention": (4096, 16384, 65536),
    "composed": (8192, 16384, 32768, 65536, 131072, 262144),
    "composed-cp": (65536, 262144),
    "model": (262144,),
}
# benchmarks: timed repetitions of calls longer than LONG_CALL_MS (median of REPS after one warm-up)
LONG_CALL_MS = 400.0
REPS = 3
