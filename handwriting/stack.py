"""Starts the three services (and Envoy, when asked) as separate local processes on loopback ports, and
restarts a stage that dies (`restart_dead`, with backoff), as compose and ECS restart containers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.healthcheck import wait_serving

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    orchestrator_port: int = 50051
    detector_port: int = 50052
    recognizer_port: int = 50053
    envoy_port: int = 0  # 0: no Envoy
    # Envoy's edge: API keys (client -> key; none: no authentication, for a laptop) and each client's rate
    api_keys: dict[str, str] = field(default_factory=dict)
    requests_per_minute: int = 60
    burst: int = 10
    tls_cert: str | None = None  # Envoy listens with TLS given these PEM files
    tls_key: str | None = None
    jwks_file: str | None = None  # instead of API keys: JWTs signed by a key of this JWKS, issuer and audience
    jwt_issuer: str = ""
    jwt_audience: str = ""
    detector_weights: str | None = None
    recognizer_model_dir: str | None = None
    log_dir: Path | None = None
    tracing: str = "off"  # off | w3c | xray
    collector: str = "127.0.0.1:4317"  # OTLP/gRPC receiver for the services (and Envoy in w3c mode)
    xray_daemon: str = "127.0.0.1:2000"  # X-Ray daemon (UDP) for Envoy in xray mode
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, envoy: bool = True, **values) -> StackConfig:
        """Every service (and Envoy, unless `envoy` is False) on a free loopback port."""
        ports = {"orchestrator_port": free_port(), "detector_port": free_port(), "recognizer_port": free_port()}
        if envoy:
            ports |= {"envoy_port": free_port()}
        return cls(**{**ports, **values})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalStack:
    """The detector, recognizer and orchestrator (and optionally Envoy) as child processes."""

    def __init__(self, config: StackConfig):
        self.config = config
        self.processes: dict[str, subprocess.Popen] = {}
        self.envoy_admin: Path | None = None  # Envoy's admin unix socket
        self._specs: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        self.restarts: dict[str, list[float]] = {}  # monotonic times each stage was restarted

    def _env(self, port: int, **values: str) -> dict[str, str]:
        env = {**os.environ, **self.config.extra_env, "HW_HOST": self.config.host, "HW_PORT": str(port)}
        env.update({"HW_TRACING": self.config.tracing, "HW_OTLP_ENDPOINT": f"http://{self.config.collector}"})
        env.update({f"HW_{k.upper()}": v for k, v in values.items() if v is not None})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None) -> subprocess.Popen:
        output = None
        if self.config.log_dir:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.config.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT if output else None, cwd=REPO_ROOT
        )
        self.processes[name] = process
        self._specs[name] = (command, env)
        return process

    def start(self, timeout: float = 180.0) -> None:
        c = self.config
        detector = self._spawn(
            "detector",
            [sys.executable, "-m", "services.detector.server"],
            self._env(c.detector_port, detector_weights=c.detector_weights),
        )
        recognizer = self._spawn(
            "recognizer",
            [sys.executable, "-m", "services.recognizer.server"],
            self._env(c.recognizer_port, recognizer_model_dir=c.recognizer_model_dir),
        )
        try:
            # the model stages first, so that a SERVING orchestrator means the whole stack is up
            for port, process in ((c.detector_port, detector), (c.recognizer_port, recognizer)):
                wait_serving(f"{c.host}:{port}", timeout, process)
            orchestrator = self._spawn(
                "orchestrator",
                [sys.executable, "-m", "services.orchestrator.server"],
                self._env(
                    c.orchestrator_port,
                    detector_address=f"{c.host}:{c.detector_port}",
                    recognizer_address=f"{c.host}:{c.recognizer_port}",
                ),
            )
            wait_serving(f"{c.host}:{c.orchestrator_port}", timeout, orchestrator)
            if c.envoy_port:
                from deploy.envoy.config import Edge, start_envoy

                self.processes["envoy"], self.envoy_admin = start_envoy(
                    c.envoy_port,
                    f"{c.host}:{c.orchestrator_port}",
                    c.log_dir,
                    tracing=c.tracing,
                    collector=c.xray_daemon if c.tracing == "xray" else c.collector,
                    edge=Edge(
                        c.api_keys,
                        c.requests_per_minute,
                        c.burst,
                        c.tls_cert,
                        c.tls_key,
                        c.jwks_file,
                        c.jwt_issuer,
                        c.jwt_audience,
                    ),
                )
        except BaseException:
            self.stop()
            raise

    def poll(self) -> str | None:
        """Name of a child that has exited, if any."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name
        return None

    def restart_dead(self, backoff_base: float = 1.0, backoff_max: float = 30.0) -> list[str]:
        """Start again each model stage or orchestrator that has exited; returns their names. A stage that
        keeps dying waits longer each time (1, 2, 4 ... 30 s since its last restart) before the next try."""
        restarted = []
        now = time.monotonic()
        for name, process in list(self.processes.items()):
            if process.poll() is None or name not in self._specs:
                continue
            recent = [t for t in self.restarts.get(name, []) if now - t < 2 * backoff_max]
            wait = min(backoff_max, backoff_base * 2 ** (len(recent) - 1)) if recent else 0.0
            if recent and now - recent[-1] < wait:
                continue
            command, env = self._specs[name]
            self._spawn(name, command, env)
            self.restarts.setdefault(name, []).append(now)
            restarted.append(name)
        return restarted

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every child (they drain in-flight calls), then SIGKILL what is left after `grace`."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
