"""Helpers shared by the servicers: turning known failures into rich gRPC statuses."""

from __future__ import annotations

import contextlib

import grpc

from services.common import errors
from services.common.images import ImageError
from services.common.model_runner import DeadlineExpired, QueueFull


class ModelNotReady(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def rpc_errors(context: grpc.aio.ServicerContext):
    """Map ImageError -> INVALID_ARGUMENT, QueueFull -> RESOURCE_EXHAUSTED, a deadline that passed in the queue
    -> DEADLINE_EXCEEDED, not ready -> UNAVAILABLE."""
    try:
        yield
    except ImageError as error:
        await context.abort_with_status(errors.bad_request(error.field, error.description, error.reason))
    except QueueFull as error:
        await context.abort_with_status(errors.error(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error), "OVERLOADED"))
    except DeadlineExpired as error:
        await context.abort_with_status(errors.error(grpc.StatusCode.DEADLINE_EXCEEDED, str(error), "DEADLINE_EXPIRED"))
    except ModelNotReady as error:
        await context.abort_with_status(errors.error(grpc.StatusCode.UNAVAILABLE, str(error), "MODEL_LOADING"))
