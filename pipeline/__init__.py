"""The csa-dsl compiler core, read top-down:

    lang/           the language: spec, presets, schedule, defaults, errors
    stages/         the stage registry: one entry per stage kind (its spec type, inputs, kernels
                    per backend, cost model, IR emitter), over the kernel folders of
                    kernels_triton/ and kernels_tilelang/ (each with its naive.py reference)
    program.py      the Program: buffers, calls and loops; printable, serialisable, executable
    planner.py      memory: what is really free, the budget, the chunk; refusals that say what fits
    composer.py     spec + schedule -> Program (the chunked loop; every path is a schedule of it)
    interpreter.py  runs any Program on any backend by looking its calls up in one op table
    context_parallel.py  the composer transform that shards a Program over ranks

The front end (csa_dsl: compile, CLI, IR printing) sits on top of this package.
"""
