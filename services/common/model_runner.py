"""Runs blocking model calls off the event loop, one at a time, with a bounded wait queue, joining the requests
that wait into one model call (the recognizer's crops across pages, the detector's pages).

The model owns the CPU/GPU; calls are serialised on one worker thread so the event loop keeps
answering health checks while a batch runs. When more than `max_queue` calls wait, new ones are
refused (RESOURCE_EXHAUSTED upstream) instead of piling up: backpressure, not a growing backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


class QueueFull(RuntimeError):
    pass


class DeadlineExpired(RuntimeError):
    """A request's deadline passed while it waited for the model: it was not run."""


@dataclass
class _Job:
    items: list
    future: asyncio.Future
    deadline: float | None  # the event loop's clock


class BatchingRunner:
    """One model, many requests: the items of the requests waiting are joined into one model call.

    `run(items)` queues a request's items; a worker takes the requests in order while their items fit in
    `max_items` (a request is never split; one larger than that runs alone), waiting at most `max_wait`
    seconds for more once the first has come (none while the model is busy: then the queue fills by
    itself), calls `function(all_items)` on a thread of the model's own and hands each request its slice of
    the results. With `concurrency` > 1, that many calls run at once, each formed as above: one call's
    serial parts (and its last batch, when the model spreads a call over cores) then overlap another's work.
    A request whose deadline passes while it waits is failed (DeadlineExpired) without
    running; one whose caller went away is dropped. More than `max_queue` requests waiting: QueueFull.
    When a call of several requests fails, each is run again alone: a request the model cannot take fails
    by itself, the others are answered.
    """

    def __init__(
        self,
        function: Callable[[list], list],
        max_items: int = 64,
        max_wait: float = 0.005,
        max_queue: int = 32,
        on_batch: Callable[[int, float], None] | None = None,
        concurrency: int = 1,
    ):
        self.function = function
        self.on_batch = on_batch  # told the items and seconds of each model call (metrics)
        self.max_items = max_items
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.concurrency = max(1, concurrency)
        self.executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="model")
        self.queue: list[_Job] = []
        self.batch_sizes: list[int] = []  # items per model call (recent ones), for metrics and tests
        self._arrived: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []

    @property
    def pending(self) -> int:
        return len(self.queue)

    @property
    def pending_items(self) -> int:
        return sum(len(job.items) for job in self.queue)

    async def run(self, items: list, deadline: float | None = None) -> list:
        if len(self.queue) >= self.max_queue:
            raise QueueFull(f"{len(self.queue)} requests already waiting for the model")
        loop = asyncio.get_running_loop()
        if not self._workers or any(worker.done() for worker in self._workers):
            for worker in self._workers:
                worker.cancel()
            self._arrived = asyncio.Event()
            self._workers = [loop.create_task(self._work()) for _ in range(self.concurrency)]
        job = _Job(list(items), loop.create_future(), deadline)
        self.queue.append(job)
        self._arrived.set()
        return await job.future

    def _take(self) -> list[_Job]:
        """The requests of the next model call, from the front of the queue."""
        now = asyncio.get_running_loop().time()
        taken, count = [], 0
        while self.queue:
            job = self.queue[0]
            if job.future.done():  # the caller went away
                self.queue.pop(0)
                continue
            if job.deadline is not None and now >= job.deadline:
                self.queue.pop(0)
                job.future.set_exception(DeadlineExpired("the deadline passed while waiting for the model"))
                continue
            if taken and count + len(job.items) > self.max_items:
                break
            taken.append(self.queue.pop(0))
            count += len(job.items)
        return taken

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if self.max_wait > 0 and sum(len(job.items) for job in self.queue) < self.max_items:
                await asyncio.sleep(self.max_wait)  # a few ms for other requests to join this call
            while self.queue:
                jobs = self._take()
                if not jobs:
                    break
                items = [item for job in jobs for item in job.items]
                started = loop.time()
                try:
                    results = await loop.run_in_executor(self.executor, self.function, items)
                except Exception as error:
                    if len(jobs) > 1:  # the model failed on one of them, maybe: each alone, so only that one fails
                        for job in jobs:
                            await self._run_alone(job)
                    elif not jobs[0].future.done():
                        jobs[0].future.set_exception(error)
                    continue
                self.batch_sizes = [*self.batch_sizes[-99:], len(items)]
                if self.on_batch is not None:
                    self.on_batch(len(items), loop.time() - started)
                start = 0
                for job in jobs:
                    if not job.future.done():
                        job.future.set_result(results[start : start + len(job.items)])
                    start += len(job.items)

    async def _run_alone(self, job: _Job) -> None:
        if job.future.done():
            return
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, self.function, job.items)
        except Exception as error:
            if not job.future.done():
                job.future.set_exception(error)
            return
        if not job.future.done():
            job.future.set_result(result)

    def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        self.executor.shutdown(wait=True)
