"""Envoy's configuration, generated from one function so local runs, compose and ECS stay alike.

    python -m deploy.envoy.config                # rewrite envoy.yaml (compose) and envoy-ecs.yaml (ECS)
    python -m deploy.envoy.config --check        # fail if either is stale (CI)

One listener serves gRPC and REST: the grpc_json_transcoder turns `POST /v1/pages:process` with a
JSON body into the OcrService call (descriptor set from scripts/gen_protos.sh) and maps gRPC errors
to HTTP statuses with a JSON body; unknown paths get 404; requests over the size limit get 413.
The upstream is health-checked with the gRPC health protocol; the admin listener is on loopback.
Tracing: OpenTelemetry (OTLP/gRPC to a collector, W3C trace context) or AWS X-Ray (UDP daemon,
X-Amzn-Trace-Id), so Envoy's span heads the trace the services continue.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DESCRIPTOR = HERE / "handwriting.pb"
COMPOSE_CONFIG = HERE / "envoy.yaml"
ECS_CONFIG = HERE / "envoy-ecs.yaml"
PUBLIC_SERVICES = ["handwriting.v1.OcrService"]
GRPC_PREFIXES = ["/handwriting.v1.OcrService/", "/grpc.health.v1.Health/", "/grpc.reflection."]
MAX_REQUEST_BYTES = 32 * 1024 * 1024
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(name: str, host: str, port: int, health_check: bool) -> dict:
    cluster = {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }
    if health_check:
        cluster["health_checks"] = [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": "handwriting.v1.OcrService"},
            }
        ]
    return cluster


def _tracing(mode: str, collector: tuple[str, int] | None) -> tuple[dict | None, list[dict]]:
    if mode == "off" or collector is None:
        return None, []
    if mode == "xray":
        provider = {
            "name": "envoy.tracers.xray",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.XRayConfig",
                "segment_name": "envoy",
                "daemon_endpoint": {"protocol": "UDP", "address": collector[0], "port_value": collector[1]},
            },
        }
        return {"provider": provider, "random_sampling": {"value": 100}}, []
    provider = {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "grpc_service": {"envoy_grpc": {"cluster_name": "otel_collector"}, "timeout": "1s"},
            "service_name": "envoy",
        },
    }
    return {"provider": provider, "random_sampling": {"value": 100}, "spawn_upstream_span": True}, [
        _cluster("otel_collector", collector[0], collector[1], health_check=False)
    ]


def build(
    listen_port: int = 8080,
    admin_port: int = 9901,
    upstream: str = "orchestrator:50051",
    descriptor: Path | str = DESCRIPTOR,
    tracing: str = "off",
    collector: str | None = None,
    listen_host: str = "0.0.0.0",
    request_timeout_s: int = 120,
) -> dict:
    """The whole Envoy bootstrap as a dict. `collector` is host:port (OTLP gRPC, or the X-Ray daemon)."""
    upstream_host, upstream_port = upstream.rsplit(":", 1)
    collector_address = None
    if collector:
        host, port = collector.rsplit(":", 1)
        collector_address = (host, int(port))
    tracing_config, tracing_clusters = _tracing(tracing, collector_address)
    route_action = {"cluster": "orchestrator", "timeout": f"{request_timeout_s}s"}
    routes = [{"match": {"prefix": prefix}, "route": route_action} for prefix in GRPC_PREFIXES]
    # liveness of Envoy itself for load balancers that speak plain HTTP (the ALB's REST target group)
    routes.insert(
        0, {"match": {"path": "/healthz"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
    )
    routes.append(
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "no such path"}},
        }
    )
    manager = {
        "@type": HCM,
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "request_timeout": f"{request_timeout_s}s",
        "stream_idle_timeout": "300s",
        "generate_request_id": True,
        "use_remote_address": True,
        # Envoy's own replies (404, 413, 503, timeouts) as JSON too, like the transcoded errors
        "local_reply_config": {
            "body_format": {
                "json_format": {"status": "%RESPONSE_CODE%", "message": "%LOCAL_REPLY_BODY%"},
                "content_type": "application/json",
            }
        },
        "route_config": {
            "name": "ocr",
            "virtual_hosts": [{"name": "ocr", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": MAX_REQUEST_BYTES,
                },
            },
            {
                "name": "envoy.filters.http.grpc_json_transcoder",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
                    ".GrpcJsonTranscoder",
                    "proto_descriptor": str(descriptor),
                    "services": PUBLIC_SERVICES,
                    "convert_grpc_status": True,
                    "print_options": {"always_print_primitive_fields": True, "preserve_proto_field_names": False},
                    "max_request_body_size": MAX_REQUEST_BYTES,
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    if tracing_config:
        manager["tracing"] = tracing_config
    return {
        "admin": {"address": _address("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "public",
                    "address": _address(listen_host, listen_port),
                    "per_connection_buffer_limit_bytes": MAX_REQUEST_BYTES,
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster("orchestrator", upstream_host, int(upstream_port), health_check=True)]
            + tracing_clusters,
        },
    }


def render(config: dict) -> str:
    header = "# Generated by `python -m deploy.envoy.config`; edit deploy/envoy/config.py instead.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def envoy_binary() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    return str(candidate) if candidate.exists() else "envoy"


def validate(path: Path) -> None:
    """`envoy --mode validate`: the authoritative check of a config."""
    subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"], check=True, stdout=subprocess.DEVNULL
    )


def start_envoy(
    port: int,
    admin_port: int,
    upstream: str,
    log_dir: Path | None = None,
    tracing: str = "off",
    collector: str | None = None,
    timeout: float = 20.0,
) -> subprocess.Popen:
    """Run Envoy locally in front of `upstream`; returns once its admin /ready answers LIVE."""
    import time
    import urllib.request

    workdir = Path(log_dir or "/tmp") / f"envoy-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "envoy.yaml"
    config = build(port, admin_port, upstream, DESCRIPTOR, tracing, collector, listen_host="127.0.0.1")
    config_path.write_text(render(config))
    log = open(workdir / "envoy.log", "ab")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [envoy_binary(), "-c", str(config_path), "--base-id", str(port), "-l", "warning", "--disable-hot-restart"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited with {process.returncode}; see {workdir / 'envoy.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"envoy not ready after {timeout} s; see {workdir / 'envoy.log'}")


def committed_configs() -> dict[Path, str]:
    """The configs baked into the Envoy image (descriptor at /etc/envoy/handwriting.pb).

    compose: upstream `orchestrator:50051`, W3C traces to the OTel collector.
    ECS: orchestrator in the same task (localhost), X-Ray segments to the ADOT sidecar on UDP 2000.
    """
    descriptor = "/etc/envoy/handwriting.pb"
    return {
        COMPOSE_CONFIG: render(build(descriptor=descriptor, tracing="w3c", collector="otel-collector:4317")),
        ECS_CONFIG: render(
            build(descriptor=descriptor, upstream="127.0.0.1:50051", tracing="xray", collector="127.0.0.1:2000")
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed configs differ from generated")
    args = parser.parse_args(argv)
    stale = []
    for path, text in committed_configs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(map(str, stale))}: run python -m deploy.envoy.config", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
