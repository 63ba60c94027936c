"""The one way every service builds, runs and stops its gRPC server.

`create_server` gives an aio server with health (NOT_SERVING until `mark_serving`), tracing
interceptors and, where a setting asks for it, reflection, bound to the settings' port (0 picks a
free one: tests use that).
`serve` runs it until SIGTERM/SIGINT, then drains: health goes NOT_SERVING, in-flight calls finish
within the grace period, then the server stops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import errors
from services.common.metrics import Metrics
from services.common.settings import ServerSettings
from services.common.tracing import server_interceptors

logger = logging.getLogger("handwriting.server")


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    # what the service opened besides the server (channels, model threads): closed after the server stops
    closers: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    # background tasks of the service (the orchestrator's watch on its stages): cancelled first on stop
    tasks: list[asyncio.Task] = field(default_factory=list)

    async def mark_serving(self, serving: bool = True) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)  # the metrics write their last record
        await self.mark_serving(False)
        await self.server.stop(grace)
        for close in self.closers:
            result = close()
            if result is not None:
                await result


class _Malformed:
    """What a request that does not parse deserializes to: the handler then answers INVALID_ARGUMENT."""

    def __init__(self, error: Exception):
        self.error = error


class MalformedRequests(grpc.aio.ServerInterceptor):
    """A request body that is not the method's protobuf answers INVALID_ARGUMENT (BadRequest on the body),
    where gRPC would answer UNKNOWN and log a traceback. Unary methods (all of ours)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        parse, behaviour = handler.request_deserializer, handler.unary_unary

        def deserialize(data: bytes):
            try:
                return parse(data)
            except Exception as error:  # DecodeError and whatever else a parser raises on bad bytes
                return _Malformed(error)

        async def checked(request, context):
            if isinstance(request, _Malformed):
                logger.info("malformed request", extra={"method": handler_call_details.method})
                await context.abort_with_status(
                    errors.bad_request("(body)", "the request is not a valid protobuf message", "MALFORMED_REQUEST")
                )
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    size = settings.max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        # reconnect fast after a stage restarts instead of backing off for up to 2 minutes
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 30000),
    ]


async def create_server(
    settings: ServerSettings,
    register: Iterable[Callable[[grpc.aio.Server], None]],
    service_names: Iterable[str],
    metrics: Metrics | None = None,
) -> RunningServer:
    server = grpc.aio.server(
        interceptors=[MalformedRequests(), *server_interceptors(settings)],
        options=channel_options(settings),
        maximum_concurrent_rpcs=settings.rpc_limit,
    )
    for add in register:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    if settings.reflection:
        reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(settings.address)
    if port == 0:
        raise RuntimeError(f"could not bind {settings.address}")
    running = RunningServer(server, port, health_servicer, names)
    if metrics is not None and metrics.enabled:
        running.tasks.append(asyncio.create_task(metrics.run()))
    await running.mark_serving(False)
    await server.start()
    logger.info("listening", extra={"address": f"{settings.host}:{port}", "services": list(names)})
    return running


async def start_model_service(settings: ServerSettings, servicer, add_servicer, service_name: str) -> RunningServer:
    """Start serving with health NOT_SERVING, load the model off the event loop (`servicer.load`),
    then report SERVING: health checks answer all through a slow model load."""
    running = await create_server(
        settings, [lambda server: add_servicer(servicer, server)], [service_name], servicer.metrics
    )
    running.closers.append(servicer.runner.close)
    await asyncio.get_running_loop().run_in_executor(None, servicer.load)
    await running.mark_serving()
    return running


def run(settings_class: type, start: Callable[[ServerSettings], Awaitable[RunningServer]]) -> None:
    """A service's `main`: settings from the environment, JSON logs, serve until SIGTERM."""
    from services.common.logs import configure_logging
    from services.common.settings import load

    settings = load(settings_class)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings, start))


async def serve(settings: ServerSettings, start: Callable[[ServerSettings], Awaitable[RunningServer]]) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    running = await start(settings)
    await stop_requested.wait()
    logger.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
    await running.stop(settings.shutdown_grace_seconds)
    logger.info("stopped")
