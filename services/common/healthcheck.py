"""The gRPC health check, once: a single check, waiting for SERVING, and the container health command.

python -m services.common.healthcheck --port 50052     # exit 0 when SERVING
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(channel: grpc.Channel, service: str = "", timeout: float = 2.0) -> str:
    """SERVING, NOT_SERVING, ... or the gRPC code's name (UNAVAILABLE) when nothing answers."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def wait_serving(address: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Block until the health check at `address` says SERVING; fail fast if `process` died."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the service for {address} exited with code {process.returncode}")
            if check(channel, timeout=1.0) == "SERVING":
                return
            time.sleep(0.2)  # starting, or loading its model: poll its health
    raise TimeoutError(f"{address} was not SERVING after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    with grpc.insecure_channel(f"{args.address}:{args.port}") as channel:
        status = check(channel, args.service, args.timeout)
    print(status, file=sys.stdout if status == "SERVING" else sys.stderr)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
