"""The `handwriting` command: run the stack locally, OCR pages through it, check its health.

handwriting serve                 # detector, recognizer, orchestrator (+ Envoy) on loopback
handwriting ocr page.jpg          # lines and words with boxes and confidences
handwriting ocr --format json a.png b.jpg
handwriting status
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from google.protobuf import json_format

from handwriting.client import OcrClient, OcrError
from handwriting.formats import WRITERS
from services.common import geometry, healthcheck


def _box(poly) -> str:
    if not poly.vertices:
        return "[]"
    left, top, right, bottom = geometry.from_points((v.x, v.y) for v in poly.vertices)
    return f"[{left},{top} {right},{bottom}]"


def format_layout(response) -> str:
    page = response.page
    out = [
        f"page {page.width}x{page.height}, {len(page.lines)} lines, "
        f"{sum(len(line.words) for line in page.lines)} words, confidence {page.confidence:.2f}, "
        f"{response.timings.total_ms:.0f} ms"
    ]
    for number, line in enumerate(page.lines, 1):
        out.append(f"line {number} {_box(line.bounding_poly)} {line.confidence:.2f}: {line.text}")
        for word in line.words:
            out.append(f"    {_box(word.bounding_poly)} {word.confidence:.2f} {word.text}")
    return "\n".join(out)


def cmd_ocr(args: argparse.Namespace) -> int:
    failures = 0
    client = OcrClient(
        args.address, timeout=args.timeout, api_key=args.api_key, tls_ca=args.tls_ca, bearer_token=args.token
    )
    with client:
        if args.wait:
            with contextlib.suppress(TimeoutError):  # the calls below report what is wrong
                healthcheck.wait_serving(args.address, args.wait)
        results = {}
        for path in args.images:
            try:
                if Path(path).suffix.lower() in DOCUMENT_SUFFIXES:
                    responses = _read_document(client, Path(path), args)
                else:
                    responses = [client.process_page(Path(path), min_detection_score=args.min_score)]
            except (OcrError, OSError) as error:
                failures += 1
                print(f"{path}: {error}", file=sys.stderr)
                for field, description in getattr(error, "violations", []):
                    print(f"  {field}: {description}", file=sys.stderr)
                continue
            for number, response in enumerate(responses, 1):
                name = path if len(responses) == 1 else f"{path}#{number}"
                if args.format == "json":
                    results[name] = json_format.MessageToDict(response)
                elif args.format in WRITERS:
                    print(WRITERS[args.format][0](response.page, Path(path).name), end="")
                else:
                    if len(args.images) > 1 or len(responses) > 1:
                        print(f"== {name}")
                    print(format_layout(response))
        if args.format == "json":
            print(json.dumps(results if len(args.images) > 1 else next(iter(results.values()), {}), indent=1))
    return 1 if failures else 0


DOCUMENT_SUFFIXES = (".pdf", ".tif", ".tiff")


def _read_document(client: OcrClient, path: Path, args: argparse.Namespace) -> list:
    """Every page of a PDF or TIFF through ProcessDocument, with a progress line on stderr."""
    responses = []
    for response in client.process_document(path, min_detection_score=args.min_score, dpi=args.dpi):
        responses.append(response)
        print(f"\r{path.name}: page {response.page_number}/{response.page_count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return responses


def cmd_status(args: argparse.Namespace) -> int:
    worst = 0
    for name, address in (
        ("orchestrator", args.address),
        ("detector", args.detector_address),
        ("recognizer", args.recognizer_address),
    ):
        with OcrClient(address) as client:
            status = client.health()
        print(f"{name:13s} {address:22s} {status}")
        worst = max(worst, 0 if status == "SERVING" else 1)
    return worst


def cmd_serve(args: argparse.Namespace) -> int:
    from deploy.envoy.config import load_api_keys
    from handwriting.stack import LocalStack, StackConfig

    api_keys = load_api_keys(Path(args.api_keys).read_text()) if args.api_keys else {}
    tls_cert, tls_key = args.tls_cert, args.tls_key
    if args.self_signed:
        from deploy.envoy.tls import make_self_signed

        tls_cert, tls_key = map(str, make_self_signed(Path(args.self_signed)))
        print(f"TLS with a self-signed certificate: clients trust {tls_cert} (--tls-ca, curl --cacert)", flush=True)
    if not api_keys and not args.jwks and not args.no_envoy:
        print("no --api-keys: Envoy lets anyone who reaches it call (it listens on loopback only)", file=sys.stderr)
    stack = LocalStack(
        StackConfig(
            orchestrator_port=args.port,
            detector_port=args.detector_port,
            recognizer_port=args.recognizer_port,
            envoy_port=0 if args.no_envoy else args.envoy_port,
            detector_weights=args.detector_weights,
            recognizer_model_dir=args.recognizer_model,
            log_dir=Path(args.log_dir) if args.log_dir else None,
            tracing=args.tracing,
            collector=args.collector,
            xray_daemon=args.xray_daemon,
            extra_env={"HW_REFLECTION": "true"} if args.reflection else {},
            api_keys=api_keys,
            requests_per_minute=args.rate,
            tls_cert=tls_cert,
            tls_key=tls_key,
            jwks_file=args.jwks,
            jwt_issuer=args.jwt_issuer,
            jwt_audience=args.jwt_audience,
        )
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    started = time.monotonic()
    try:
        stack.start()
        print(
            f"ready in {time.monotonic() - started:.1f} s: gRPC localhost:{args.port}"
            + ("" if args.no_envoy else f", REST and gRPC through Envoy http://localhost:{args.envoy_port}"),
            flush=True,
        )
        while not stopping:
            if stack.poll() == "envoy":
                print("envoy exited; stopping the stack", file=sys.stderr)
                return 1
            for name in stack.restart_dead():  # a dead stage comes back; the others answer UNAVAILABLE meanwhile
                print(f"{name} exited; restarted it", file=sys.stderr, flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="handwriting", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the whole stack locally (Ctrl-C stops it)")
    serve.add_argument("--port", type=int, default=50051, help="orchestrator gRPC port")
    serve.add_argument("--detector-port", type=int, default=50052)
    serve.add_argument("--recognizer-port", type=int, default=50053)
    serve.add_argument("--envoy-port", type=int, default=8080)
    serve.add_argument("--no-envoy", action="store_true", help="serve gRPC only, without Envoy in front")
    serve.add_argument("--detector-weights", help="YOLOv8 .pt (default: models/detector/detector.pt)")
    serve.add_argument("--recognizer-model", help="TrOCR checkpoint dir (default: models/recognizer)")
    serve.add_argument("--log-dir", help="write each service's log here instead of the terminal")
    serve.add_argument("--tracing", choices=["off", "w3c", "xray"], default="off")
    serve.add_argument("--collector", default="127.0.0.1:4317", help="OTLP/gRPC collector host:port")
    serve.add_argument("--xray-daemon", default="127.0.0.1:2000", help="X-Ray daemon host:port for Envoy")
    serve.add_argument("--reflection", action="store_true", help="gRPC reflection on every stage (development)")
    serve.add_argument(
        "--api-keys",
        default=os.environ.get("HW_API_KEYS_FILE"),
        help="file of `client key` lines: Envoy then wants x-api-key (default: $HW_API_KEYS_FILE)",
    )
    serve.add_argument("--rate", type=int, default=60, help="requests a minute per API key (burst 10)")
    serve.add_argument("--tls-cert", help="Envoy listens with TLS: certificate chain (PEM); with --tls-key")
    serve.add_argument("--tls-key", help="the certificate's private key (PEM)")
    serve.add_argument("--jwks", help="instead of API keys: accept JWTs signed by a key in this JWKS file")
    serve.add_argument("--jwt-issuer", default="", help="with --jwks: the `iss` the tokens must carry")
    serve.add_argument("--jwt-audience", default="", help="with --jwks: the `aud` the tokens must carry")
    serve.add_argument(
        "--self-signed",
        metavar="DIR",
        help="make (or reuse) a self-signed certificate for localhost in DIR and listen with TLS",
    )
    serve.set_defaults(run=cmd_serve)

    ocr = sub.add_parser("ocr", help="OCR image files through the running stack")
    ocr.add_argument("images", nargs="+")
    ocr.add_argument("--address", default="localhost:50051")
    ocr.add_argument(
        "--format",
        choices=["layout", "json", *WRITERS],
        default="layout",
        help="layout (boxes and confidences), json, text, hocr (hOCR 1.2), alto (ALTO 4.4) or page (PAGE-XML 2019)",
    )
    ocr.add_argument("--min-score", type=float, default=0.0, help="drop word boxes scored below this")
    ocr.add_argument("--timeout", type=float, default=60.0)
    ocr.add_argument("--dpi", type=int, default=0, help="PDF pages are rendered at this resolution (0: 200)")
    ocr.add_argument("--api-key", default=None, help="sent as x-api-key (default: $HW_API_KEY)")
    ocr.add_argument("--tls-ca", default=None, help="connect with TLS, trusting this certificate (default: $HW_TLS_CA)")
    ocr.add_argument("--token", default=None, help="a JWT, sent as Authorization: Bearer (default: $HW_BEARER_TOKEN)")
    ocr.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the stack to be SERVING")
    ocr.set_defaults(run=cmd_ocr)

    status = sub.add_parser("status", help="health of the three services")
    status.add_argument("--address", default="localhost:50051")
    status.add_argument("--detector-address", default="localhost:50052")
    status.add_argument("--recognizer-address", default="localhost:50053")
    status.set_defaults(run=cmd_status)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
