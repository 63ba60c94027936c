"""Application metrics as CloudWatch Embedded Metric Format (EMF) records in the service's output.

With HW_METRICS=emf a service writes, every HW_METRICS_INTERVAL_SECONDS (10), one JSON record on stdout with
what it counted and measured since the last one and its gauges now (queue depth, pages in flight), in the
namespace HandwritingOCR with the dimension Service. On ECS the awslogs driver carries stdout to CloudWatch
Logs, which turns each record into metrics: no agent, no API call from the service. The records are written by
AWS's `aws-embedded-metrics` library (its "Local" environment: stdout); the scaling policies and alarms of
deploy/aws/template.yaml read them.

A record is written even when nothing happened (counts of 0, gauges as they are): a service whose metrics
stop is a service that stopped, and the alarms treat that silence as trouble.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

NAMESPACE = "HandwritingOCR"
logger = logging.getLogger("handwriting.metrics")


class Metrics:
    """What one service counts (`count`), measures (`observe`: each value kept, so CloudWatch has the
    distribution) and reads when it writes (`gauge`)."""

    def __init__(self, service: str, enabled: bool = False, interval: float = 10.0):
        self.service, self.enabled, self.interval = service, enabled, interval
        self.counts: dict[str, float] = defaultdict(float)
        self.values: dict[str, tuple[str, list[float]]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.count_names: set[str] = set()

    def count(self, name: str, amount: float = 1) -> None:
        if self.enabled:
            self.counts[name] += amount

    def declare_counts(self, *names: str) -> None:
        """Counts written as 0 when nothing was counted, so their absence always means silence."""
        self.count_names.update(names)

    def observe(self, name: str, value: float, unit: str = "Milliseconds") -> None:
        if self.enabled:
            self.values.setdefault(name, (unit, []))[1].append(float(value))

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self.gauges[name] = read

    async def flush(self) -> None:
        from aws_embedded_metrics.config import get_config
        from aws_embedded_metrics.logger.metrics_logger_factory import create_metrics_logger

        get_config().environment = "local"  # stdout, whatever the host: the log driver carries it
        record = create_metrics_logger()
        record.set_namespace(NAMESPACE)
        record.set_dimensions({"Service": self.service})
        counts, self.counts = self.counts, defaultdict(float)
        values, self.values = self.values, {}
        for name in sorted(self.count_names | set(counts)):
            record.put_metric(name, counts.get(name, 0.0), "Count")
        for name, (unit, observed) in sorted(values.items()):
            for value in observed[:100]:  # EMF takes up to 100 values of a metric in one record
                record.put_metric(name, value, unit)
        for name, read in sorted(self.gauges.items()):
            record.put_metric(name, float(read()), "Count")
        await record.flush()

    async def run(self) -> None:
        """Write a record every interval until cancelled (then once more, so the last counts are kept)."""
        if not self.enabled:
            return
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.flush()
                except Exception:  # noqa: BLE001 - metrics must never take a service down
                    logger.exception("metrics record failed")
        except asyncio.CancelledError:
            await self.flush()
            raise
