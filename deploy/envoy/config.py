"""Envoy's configuration, generated from one function so local runs, compose and ECS stay alike.

    python -m deploy.envoy.config                # rewrite envoy.yaml (compose) and envoy-ecs.yaml (ECS)
    python -m deploy.envoy.config --check        # fail if either is stale (CI)

One listener serves gRPC and REST: the grpc_json_transcoder turns `POST /v1/pages:process` with a
JSON body into the OcrService call (descriptor set from scripts/gen_protos.sh) and maps gRPC errors
to HTTP statuses with a JSON body; unknown paths get 404; requests over the size limit get 413.
The upstream is health-checked with the gRPC health protocol.

The edge (when given API keys): Envoy's api_key_auth filter checks `x-api-key` (or
`Authorization: Bearer <key>`) and answers 401 / UNAUTHENTICATED without a valid one; health
(`/healthz`, grpc.health.v1) stays open. Each key's client gets its own token bucket (local_ratelimit,
a wildcard descriptor on the client id that api_key_auth forwards): over it, 429 / RESOURCE_EXHAUSTED
with `retry-after`. Connections are capped by the overload manager, slow uploads cut by the idle and
header timeouts. The admin interface is on a unix socket (or loopback), never on the network.
Tracing: OpenTelemetry (OTLP/gRPC to a collector, W3C trace context) or AWS X-Ray (UDP daemon,
X-Amzn-Trace-Id), so Envoy's span heads the trace the services continue.

The bootstrap is built from envoy-data-plane's typed messages (betterproto2 dataclasses of Envoy's
v3 API, validated by pydantic), so a misspelt field, a wrong type or an unknown enum value fails
here in Python rather than when Envoy starts. Typed configs are packed into `Any`; `to_dict` turns
the result into Envoy's proto JSON with snake_case field names and `@type`, which is dumped as YAML.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import betterproto2
import yaml
from envoy_data_plane.envoy.config.accesslog.v3 import (
    AccessLogFilter,
    ComparisonFilter,
    ComparisonFilterOp,
    StatusCodeFilter,
)
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType, ClusterLbPolicy
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    DataSource,
    GrpcService,
    GrpcServiceEnvoyGrpc,
    HeaderValue,
    HeaderValueOption,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    Http2ProtocolOptions,
    Pipe,
    RuntimeFractionalPercent,
    RuntimeUInt32,
    SocketAddress,
    SocketAddressProtocol,
    SubstitutionFormatString,
    TransportSocket,
)
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.overload.v3 import OverloadManager, ResourceMonitor
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    FilterConfig,
    RateLimit,
    RateLimitAction,
    RateLimitActionRequestHeaders,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.config.trace.v3 import OpenTelemetryConfig, TracingHttp, XRayConfig
from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
    LocalRateLimitDescriptor,
    RateLimitDescriptorEntry,
    XRateLimitHeadersRfcVersion,
)
from envoy_data_plane.envoy.extensions.filters.http.api_key_auth.v3 import (
    ApiKeyAuth,
    Credential,
    Forwarding,
    KeySource,
)
from envoy_data_plane.envoy.extensions.filters.http.buffer.v3 import Buffer
from envoy_data_plane.envoy.extensions.filters.http.grpc_json_transcoder.v3 import (
    GrpcJsonTranscoder,
    GrpcJsonTranscoderPrintOptions,
)
from envoy_data_plane.envoy.extensions.filters.http.jwt_authn.v3 import (
    JwtAuthentication,
    JwtClaimToHeader,
    JwtProvider,
    JwtRequirement,
    RequirementRule,
)
from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpConnectionManagerTracing,
    HttpFilter,
    LocalReplyConfig,
    ResponseMapper,
)
from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3 import (
    DownstreamConnectionsConfig,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CommonTlsContext,
    DownstreamTlsContext,
    TlsCertificate,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.v3 import FractionalPercent, FractionalPercentDenominatorType, Percent, TokenBucket
from envoy_data_plane.google.protobuf import Any, Struct

HERE = Path(__file__).resolve().parent
DESCRIPTOR = HERE / "handwriting.pb"
WEB_DIR = HERE.parents[1] / "handwriting" / "web"  # the web page and the OpenAPI document Envoy serves
# what Envoy serves from WEB_DIR at each path, open to all (nothing in them is secret): path -> (file, type)
WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/openapi.yaml": ("openapi.yaml", "application/yaml"),
}
# the page runs only its own inline script and calls only this origin
WEB_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
COMPOSE_CONFIG = HERE / "envoy.yaml"
ECS_CONFIG = HERE / "envoy-ecs.yaml"
PUBLIC_SERVICES = ["handwriting.v1.OcrService"]
GRPC_PREFIXES = ["/handwriting.v1.OcrService/", "/grpc.health.v1.Health/"]  # never reflection: not public
MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_CONNECTIONS = 256  # x 32 MB of request buffer at most each; the overload manager refuses more
CLIENT_HEADER = "x-client-id"  # set by api_key_auth from the key's client name (a caller's own is replaced)
AUTH_FILTER = "envoy.filters.http.api_key_auth"
JWT_FILTER = "envoy.filters.http.jwt_authn"


@dataclass(frozen=True)
class Edge:
    """Who may call and how often: API keys (client name -> key) and each client's rate."""

    api_keys: dict[str, str] = field(default_factory=dict)
    requests_per_minute: int = 60
    burst: int = 10
    # TLS on the listener: PEM files of the certificate (chain) and its key; None: plaintext
    tls_cert: str | None = None
    tls_key: str | None = None
    # the alternative to API keys, for callers with an identity provider: JWTs (Authorization: Bearer) signed
    # by a key of this JWKS file, from this issuer, for this audience; the client id is the `sub` claim
    jwks_file: str | None = None
    jwt_issuer: str = ""
    jwt_audience: str = ""

    def __post_init__(self) -> None:
        if self.api_keys and self.jwks_file:
            raise ValueError("API keys or JWTs, not both: give one way for callers to authenticate")

    @property
    def authenticates(self) -> bool:
        return bool(self.api_keys or self.jwks_file)


def load_api_keys(text: str) -> dict[str, str]:
    """API keys from a keys file (`client key` per line, # comments), from HW_API_KEYS (`client:key,...`), or
    the AWS secret's JSON (`{"keys": [{"client": ..., "key": ...} or "key", ...], "bootstrap": "key"}`)."""
    if text.lstrip().startswith("{"):
        secret = json.loads(text)
        entries = [f"bootstrap {secret['bootstrap']}"] if secret.get("bootstrap") else []
        for number, entry in enumerate(secret.get("keys", []), 1):
            entries.append(f"{entry['client']} {entry['key']}" if isinstance(entry, dict) else f"key-{number} {entry}")
        text = "\n".join(entries)
    keys = {}
    for item in text.replace(",", "\n").splitlines():
        item = item.split("#", 1)[0].strip()
        if not item:
            continue
        client, _, key = item.replace(":", " ", 1).partition(" ")
        client, key = client.strip(), key.strip()
        if not key or len(key) < 16:
            raise ValueError(f"API key entry for {client!r}: expected `client key` with a key of 16+ characters")
        if client in keys:
            raise ValueError(f"API key entry for {client!r} appears twice")
        keys[client] = key
    return keys


def _seconds(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _http2_options() -> dict[str, Any]:
    """gRPC upstreams: HTTP/2 only."""
    options = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=Http2ProtocolOptions())
    )
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any.pack(options)}


def _grpc_health_check() -> HealthCheck:
    return HealthCheck(
        timeout=_seconds(1),
        interval=_seconds(2),
        no_traffic_interval=_seconds(2),
        unhealthy_threshold=2,
        healthy_threshold=1,
        grpc_health_check=HealthCheckGrpcHealthCheck(service_name="handwriting.v1.OcrService"),
    )


def _cluster(name: str, host: str, port: int, health_check: bool) -> Cluster:
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=_seconds(1),
        lb_policy=ClusterLbPolicy.ROUND_ROBIN,
        typed_extension_protocol_options=_http2_options(),
        load_assignment=ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=_address(host, port)))])],
        ),
        health_checks=[_grpc_health_check()] if health_check else [],
    )


def _tracing(mode: str, collector: tuple[str, int] | None) -> tuple[HttpConnectionManagerTracing | None, list[Cluster]]:
    """Envoy's tracer and, for OpenTelemetry, the cluster of the collector it exports to."""
    if mode == "off" or collector is None:
        return None, []
    everything = Percent(value=100)
    if mode == "xray":
        xray = XRayConfig(
            segment_name="envoy",
            daemon_endpoint=SocketAddress(
                protocol=SocketAddressProtocol.UDP, address=collector[0], port_value=collector[1]
            ),
        )
        provider = TracingHttp(name="envoy.tracers.xray", typed_config=Any.pack(xray))
        return HttpConnectionManagerTracing(provider=provider, random_sampling=everything), []
    otel = OpenTelemetryConfig(
        grpc_service=GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name="otel_collector"), timeout=_seconds(1)),
        service_name="envoy",
    )
    provider = TracingHttp(name="envoy.tracers.opentelemetry", typed_config=Any.pack(otel))
    tracing = HttpConnectionManagerTracing(provider=provider, random_sampling=everything, spawn_upstream_span=True)
    return tracing, [_cluster("otel_collector", collector[0], collector[1], health_check=False)]


def _routes(request_timeout_s: int, edge: Edge, web_dir: Path | str) -> list[Route]:
    """/healthz, the web page and the OpenAPI document, the gRPC services to the orchestrator, 404 for the rest
    (REST is matched by the transcoder). Health and the static files answer without a key."""

    def reply(status: int, body: str) -> DirectResponseAction:
        return DirectResponseAction(status=status, body=DataSource(inline_string=body))

    auth_filter = AUTH_FILTER if edge.api_keys else JWT_FILTER
    open_to_all = {auth_filter: Any.pack(FilterConfig(disabled=True))} if edge.authenticates else {}
    # liveness of Envoy itself for load balancers that speak plain HTTP (the ALB's REST target group)
    healthz = Route(
        match=RouteMatch(path="/healthz"), direct_response=reply(200, "ok"), typed_per_filter_config=open_to_all
    )
    to_orchestrator = [
        Route(
            match=RouteMatch(prefix=prefix),
            route=RouteAction(cluster="orchestrator", timeout=_seconds(request_timeout_s)),
            typed_per_filter_config=open_to_all if "Health" in prefix else {},
        )
        for prefix in GRPC_PREFIXES
    ]
    web = [
        Route(
            match=RouteMatch(path=path),
            direct_response=DirectResponseAction(status=200, body=DataSource(filename=f"{web_dir}/{name}")),
            response_headers_to_add=[
                HeaderValueOption(header=HeaderValue(key=key, value=value))
                for key, value in (
                    ("content-type", content_type),
                    ("cache-control", "no-cache"),
                    ("x-content-type-options", "nosniff"),
                    ("content-security-policy", WEB_POLICY),
                )
            ],
            typed_per_filter_config=open_to_all,
        )
        for path, (name, content_type) in WEB_FILES.items()
    ]
    not_found = Route(match=RouteMatch(prefix="/"), direct_response=reply(404, "no such path"))
    return [healthz, *web, *to_orchestrator, not_found]


def _everyone() -> RuntimeFractionalPercent:
    return RuntimeFractionalPercent(
        default_value=FractionalPercent(numerator=100, denominator=FractionalPercentDenominatorType.HUNDRED),
        runtime_key="local_rate_limit_enabled",
    )


def _authentication(edge: Edge) -> HttpFilter:
    """API keys (api_key_auth) or JWTs (jwt_authn); either way the caller's id goes upstream in CLIENT_HEADER."""
    if edge.api_keys:
        auth = ApiKeyAuth(
            credentials=[Credential(key=key, client=client) for client, key in sorted(edge.api_keys.items())],
            key_sources=[KeySource(header="x-api-key"), KeySource(header="authorization")],
            forwarding=Forwarding(header=CLIENT_HEADER, hide_credentials=True),
        )
        return HttpFilter(name=AUTH_FILTER, typed_config=Any.pack(auth))
    provider = JwtProvider(
        issuer=edge.jwt_issuer,
        audiences=[edge.jwt_audience] if edge.jwt_audience else [],
        local_jwks=DataSource(filename=edge.jwks_file),
        require_expiration=True,
        claim_to_headers=[JwtClaimToHeader(header_name=CLIENT_HEADER, claim_name="sub")],
    )
    everything = RequirementRule(match=RouteMatch(prefix="/"), requires=JwtRequirement(provider_name="idp"))
    jwt = JwtAuthentication(providers={"idp": provider}, rules=[everything])
    return HttpFilter(name=JWT_FILTER, typed_config=Any.pack(jwt))


def _edge_filters(edge: Edge) -> list[HttpFilter]:
    """Who the caller is (API key or JWT), then a token bucket per caller (the client id the first forwards)."""
    if not edge.authenticates:
        return []
    seconds_per_token = 60.0 / max(1, edge.requests_per_minute)
    fill_interval = max(0.05, seconds_per_token)  # Envoy's timer runs at most every 50 ms
    tokens_per_fill = max(1, round(fill_interval / seconds_per_token))
    bucket = TokenBucket(max_tokens=edge.burst, tokens_per_fill=tokens_per_fill, fill_interval=_seconds(fill_interval))
    retry_after = HeaderValueOption(header=HeaderValue(key="retry-after", value=str(max(1, round(seconds_per_token)))))
    limit = LocalRateLimit(
        stat_prefix="per_client",
        # the filter-wide bucket is not consumed: each client's own bucket (the wildcard descriptor) is
        token_bucket=TokenBucket(max_tokens=1_000_000, tokens_per_fill=1_000_000, fill_interval=_seconds(1)),
        always_consume_default_token_bucket=False,
        filter_enabled=_everyone(),
        filter_enforced=_everyone(),
        descriptors=[LocalRateLimitDescriptor(entries=[RateLimitDescriptorEntry(key="client")], token_bucket=bucket)],
        rate_limits=[
            RateLimit(
                actions=[
                    RateLimitAction(
                        request_headers=RateLimitActionRequestHeaders(
                            header_name=CLIENT_HEADER, descriptor_key="client"
                        )
                    )
                ]
            )
        ],
        max_dynamic_descriptors=max(20, 2 * len(edge.api_keys)),
        rate_limited_as_resource_exhausted=True,
        enable_x_ratelimit_headers=XRateLimitHeadersRfcVersion.DRAFT_VERSION_03,
        response_headers_to_add=[retry_after],
    )
    return [_authentication(edge), HttpFilter(name="envoy.filters.http.local_ratelimit", typed_config=Any.pack(limit))]


def _http_filters(descriptor: Path | str, edge: Edge) -> list[HttpFilter]:
    """Keys and rates (when configured), size limit (413), REST-to-gRPC transcoding with gRPC errors as HTTP
    statuses, then the router."""
    buffer = Buffer(max_request_bytes=MAX_REQUEST_BYTES)
    transcoder = GrpcJsonTranscoder(
        proto_descriptor=str(descriptor),
        services=PUBLIC_SERVICES,
        convert_grpc_status=True,
        print_options=GrpcJsonTranscoderPrintOptions(
            always_print_primitive_fields=True, preserve_proto_field_names=False
        ),
        max_request_body_size=MAX_REQUEST_BYTES,
    )
    return [
        *_edge_filters(edge),
        HttpFilter(name="envoy.filters.http.buffer", typed_config=Any.pack(buffer)),
        HttpFilter(name="envoy.filters.http.grpc_json_transcoder", typed_config=Any.pack(transcoder)),
        HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router())),
    ]


def _connection_manager(
    descriptor: Path | str,
    request_timeout_s: int,
    tracing: HttpConnectionManagerTracing | None,
    edge: Edge,
    web_dir: Path | str,
) -> HttpConnectionManager:
    # Envoy's own error replies (404, 413, 503, timeouts) as JSON too, like the transcoded errors; its other
    # direct replies (the web page) as they are
    errors_as_json = ResponseMapper(
        filter=AccessLogFilter(
            status_code_filter=StatusCodeFilter(
                comparison=ComparisonFilter(
                    op=ComparisonFilterOp.GE, value=RuntimeUInt32(default_value=400, runtime_key="json_errors_from")
                )
            )
        ),
        body_format_override=SubstitutionFormatString(
            json_format=Struct.from_dict({"status": "%RESPONSE_CODE%", "message": "%LOCAL_REPLY_BODY%"}),
            content_type="application/json",
        ),
    )
    json_replies = LocalReplyConfig(mappers=[errors_as_json])
    return HttpConnectionManager(
        stat_prefix="ingress",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        request_timeout=_seconds(request_timeout_s),
        # a client that stops sending (a stalled upload) is cut after 30 s, headers must arrive within 10 s
        stream_idle_timeout=_seconds(30),
        request_headers_timeout=_seconds(10),
        generate_request_id=True,
        use_remote_address=True,
        local_reply_config=json_replies,
        route_config=RouteConfiguration(
            name="ocr",
            virtual_hosts=[VirtualHost(name="ocr", domains=["*"], routes=_routes(request_timeout_s, edge, web_dir))],
            max_direct_response_body_size_bytes=1024 * 1024,  # the web page and the OpenAPI document
        ),
        http_filters=_http_filters(descriptor, edge),
        tracing=tracing,
    )


def _listener(host: str, port: int, manager: HttpConnectionManager, edge: Edge) -> Listener:
    network_filter = Filter(name="envoy.filters.network.http_connection_manager", typed_config=Any.pack(manager))
    tls = None
    if edge.tls_cert and edge.tls_key:
        context = DownstreamTlsContext(
            common_tls_context=CommonTlsContext(
                tls_certificates=[
                    TlsCertificate(
                        certificate_chain=DataSource(filename=edge.tls_cert),
                        private_key=DataSource(filename=edge.tls_key),
                    )
                ],
                alpn_protocols=["h2", "http/1.1"],  # gRPC needs h2; curl and browsers may speak 1.1
            )
        )
        tls = TransportSocket(name="envoy.transport_sockets.tls", typed_config=Any.pack(context))
    return Listener(
        name="public",
        address=_address(host, port),
        per_connection_buffer_limit_bytes=MAX_REQUEST_BYTES,
        filter_chains=[FilterChain(filters=[network_filter], transport_socket=tls)],
    )


def bootstrap(
    listen_port: int = 8080,
    admin_port: int = 9901,
    upstream: str = "orchestrator:50051",
    descriptor: Path | str = DESCRIPTOR,
    tracing: str = "off",
    collector: str | None = None,
    listen_host: str = "0.0.0.0",
    request_timeout_s: int = 120,
    edge: Edge | None = None,
    admin_socket: str | None = None,
    web_dir: Path | str = WEB_DIR,
) -> Bootstrap:
    """The whole Envoy bootstrap, typed. `collector` is host:port (OTLP gRPC, or the X-Ray daemon).
    `admin_socket`: the admin interface on this unix socket (mode 0600) instead of loopback:admin_port.
    `web_dir`: where the web page (index.html) and openapi.yaml are."""
    edge = edge or Edge()
    upstream_host, upstream_port = upstream.rsplit(":", 1)
    collector_address = None
    if collector:
        host, port = collector.rsplit(":", 1)
        collector_address = (host, int(port))
    tracing_config, tracing_clusters = _tracing(tracing, collector_address)
    manager = _connection_manager(descriptor, request_timeout_s, tracing_config, edge, web_dir)
    orchestrator = _cluster("orchestrator", upstream_host, int(upstream_port), health_check=True)
    admin_address = (
        Address(pipe=Pipe(path=admin_socket, mode=0o600)) if admin_socket else _address("127.0.0.1", admin_port)
    )
    connections = DownstreamConnectionsConfig(max_active_downstream_connections=MAX_CONNECTIONS)
    return Bootstrap(
        admin=Admin(address=admin_address),
        static_resources=BootstrapStaticResources(
            listeners=[_listener(listen_host, listen_port, manager, edge)],
            clusters=[orchestrator, *tracing_clusters],
        ),
        overload_manager=OverloadManager(
            resource_monitors=[
                ResourceMonitor(
                    name="envoy.resource_monitors.global_downstream_max_connections",
                    typed_config=Any.pack(connections),
                )
            ]
        ),
    )


def to_dict(message: betterproto2.Message) -> dict:
    """Envoy's proto JSON of `message`: snake_case field names, `@type` in each `Any`, defaults left out.

    Casing.SNAKE re-cases the (already snake_case) attribute names; it would turn a digit-letter name such as
    OutlierDetection's `consecutive_5xx` into `consecutive_5_xx`, which Envoy rejects (none is used here).
    """
    return message.to_dict(casing=betterproto2.Casing.SNAKE)


def build(*args, **kwargs) -> dict:
    """`bootstrap(...)` as the dict Envoy reads (same arguments)."""
    return to_dict(bootstrap(*args, **kwargs))


def render(config: dict | Bootstrap) -> str:
    if isinstance(config, Bootstrap):
        config = to_dict(config)
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


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def admin_get(admin_socket: str | Path, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET `path` from Envoy's admin interface on its unix socket: (status, body)."""
    connection = _UnixHTTPConnection(str(admin_socket), timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def start_envoy(
    port: int,
    upstream: str,
    log_dir: Path | None = None,
    tracing: str = "off",
    collector: str | None = None,
    timeout: float = 20.0,
    edge: Edge | None = None,
) -> tuple[subprocess.Popen, Path]:
    """Run Envoy locally in front of `upstream`; returns (the process, its admin socket) once admin /ready
    answers LIVE. The admin interface is a unix socket only this user can open."""
    import tempfile
    import time

    workdir = Path(log_dir or "/tmp") / f"envoy-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    admin_socket = Path(tempfile.mkdtemp(prefix="hw-envoy-")) / "admin.sock"  # short: sun_path has 108 bytes
    config_path = workdir / "envoy.yaml"
    config = bootstrap(
        port,
        0,
        upstream,
        DESCRIPTOR,
        tracing,
        collector,
        listen_host="127.0.0.1",
        edge=edge,
        admin_socket=str(admin_socket),
    )
    config_path.write_text(render(config))
    config_path.chmod(0o600)  # it holds the API keys
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
            if admin_get(admin_socket, "/ready", timeout=1)[0] == 200:
                return process, admin_socket
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"envoy not ready after {timeout} s; see {workdir / 'envoy.log'}")


CONTAINER_DESCRIPTOR = "/etc/envoy/handwriting.pb"
CONTAINER_WEB = "/etc/envoy/web"
CONTAINER_ADMIN = "/tmp/envoy-admin.sock"  # inside the Envoy container only: no other container can open it


def container_bootstrap(
    target: str,
    edge: Edge | None = None,
    port: int = 8080,
    admin_socket: str = CONTAINER_ADMIN,
    descriptor: str = CONTAINER_DESCRIPTOR,
    web_dir: str = CONTAINER_WEB,
) -> Bootstrap:
    """The Envoy container's config. compose: upstream `orchestrator:50051`, W3C traces to the OTel collector.
    ECS: orchestrator in the same task (localhost), X-Ray segments to the ADOT sidecar on UDP 2000."""
    common = {
        "listen_port": port,
        "descriptor": descriptor,
        "edge": edge,
        "admin_socket": admin_socket,
        "web_dir": web_dir,
    }
    if target == "compose":
        return bootstrap(tracing="w3c", collector="otel-collector:4317", **common)
    if target == "ecs":
        return bootstrap(upstream="127.0.0.1:50051", tracing="xray", collector="127.0.0.1:2000", **common)
    raise ValueError(f"target must be compose or ecs, not {target!r}")


def committed_configs() -> dict[Path, str]:
    """The configs without keys, committed for reading and checked for staleness (what `serve` renders, keys
    aside)."""
    return {COMPOSE_CONFIG: render(container_bootstrap("compose")), ECS_CONFIG: render(container_bootstrap("ecs"))}


def serve(target: str, port: int, admin_socket: str, environ=os.environ) -> None:
    """The Envoy container's entrypoint: the config with the API keys of HW_API_KEYS (the AWS secret's JSON,
    or `client:key,...`) or HW_API_KEYS_FILE, written 0600, then Envoy in this process's place."""
    keys_text = environ.get("HW_API_KEYS") or ""
    if not keys_text and environ.get("HW_API_KEYS_FILE"):
        keys_text = Path(environ["HW_API_KEYS_FILE"]).read_text()
    tls_cert, tls_key = environ.get("HW_TLS_CERT") or None, environ.get("HW_TLS_KEY") or None
    if not tls_cert and environ.get("HW_TLS_SELF_SIGNED", "").lower() in ("1", "true", "yes"):
        from deploy.envoy.tls import make_self_signed  # behind the ALB, which does not check its targets' certs

        tls_cert, tls_key = map(str, make_self_signed(Path(environ.get("HW_TLS_DIR", "/tmp/envoy-tls"))))
    edge = Edge(
        load_api_keys(keys_text),
        requests_per_minute=int(environ.get("HW_RATE_PER_MINUTE", "60")),
        tls_cert=tls_cert,
        tls_key=tls_key,
        jwks_file=environ.get("HW_JWKS_FILE") or None,
        jwt_issuer=environ.get("HW_JWT_ISSUER", ""),
        jwt_audience=environ.get("HW_JWT_AUDIENCE", ""),
    )
    if not edge.authenticates:
        print("envoy: no API keys (HW_API_KEYS): anyone who reaches the port can call", file=sys.stderr)
    config = Path(environ.get("HW_ENVOY_CONFIG", "/tmp/envoy.yaml"))
    config.touch(mode=0o600)
    descriptor = environ.get("HW_ENVOY_DESCRIPTOR", CONTAINER_DESCRIPTOR)
    web_dir = environ.get("HW_ENVOY_WEB", CONTAINER_WEB)
    config.write_text(render(container_bootstrap(target, edge, port, admin_socket, descriptor, web_dir)))
    binary = envoy_binary()
    os.execvp(binary, [binary, "-c", str(config), "--log-level", "warning", "--disable-hot-restart"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed configs differ from generated")
    parser.add_argument("--serve", choices=["compose", "ecs"], help="the container's entrypoint: render, run Envoy")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--admin-socket", default=CONTAINER_ADMIN)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.admin_socket)
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
