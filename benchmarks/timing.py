"""Timing for the benchmark scripts (standard library only: the GPU benchmark runs where the services' packages
are not installed)."""

from __future__ import annotations

import time


def timed(call, repeats: int, synchronize=lambda: None) -> list[float]:
    """Seconds of each of `repeats` calls of `call` after one warm-up; `synchronize` waits for work a call left
    queued (a GPU's: torch.cuda.synchronize)."""
    call()
    seconds = []
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        call()
        synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds
