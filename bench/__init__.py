"""On-demand benchmarks for kiln; run them, they are not tests.

``python -m bench.rest`` seeds the clinic example's Dog table, then loads kiln's
REST API and a bare granian + LMDB baseline one after the other with ``wrk``
and prints throughput, latency and kiln's ratios to the baseline measured in
the same run. Ratios, not absolute numbers, are what compare across machines.

Modules:
    bench.rest      the REST benchmark (entry point)
    bench.bare_app  the baseline: one LMDB read per request, no kiln code in the path
    bench.wrk       running ``wrk`` with a random-id Lua script and reading its results
    bench.procs     starting, waiting for and stopping server subprocesses
"""
