"""The emulator's benchmark suite (issue 6): ``python -m benchmarks``.

Bulk ingest, real-time capacity, start-up, memory and codec throughput, each
measured side by side against a bare baseline app on the same hypercorn
configuration. See ``benchmarks/README.md`` for what every number means.
"""

__all__: list[str] = []
