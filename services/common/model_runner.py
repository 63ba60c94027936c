"""Runs a blocking model call off the event loop, one at a time, with a bounded wait queue.

The model owns the CPU/GPU; calls are serialised on one worker thread so the event loop keeps
answering health checks while a batch runs. When more than `max_queue` calls wait, new ones are
refused (RESOURCE_EXHAUSTED upstream) instead of piling up: backpressure, not a growing backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class QueueFull(RuntimeError):
    pass


class ModelRunner:
    def __init__(self, max_queue: int = 32):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.max_queue = max_queue
        self.pending = 0

    async def run(self, function: Callable[..., T], *args) -> T:
        if self.pending >= self.max_queue:
            raise QueueFull(f"{self.pending} requests already waiting for the model")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)
        finally:
            self.pending -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=True)
