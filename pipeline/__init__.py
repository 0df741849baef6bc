"""Execution paths of a CSA pipeline: reference, materialize, composed (+ planner, runtime, benchmarks)."""
