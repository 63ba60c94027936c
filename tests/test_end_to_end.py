"""The whole stack as separate processes on the shipped models, with Envoy in front.

Starts detector, recognizer, orchestrator and Envoy exactly as `handwriting serve --api-keys` does,
then OCRs the sample page through the public API over gRPC and over REST, and tries the edge: keys,
rates, the admin interface.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from handwriting import OcrClient, OcrError
from handwriting.stack import LocalStack, StackConfig
from tests.conftest import REPO_ROOT, png_bytes
from training.metrics import error_rates

pytestmark = pytest.mark.slow
TRUTH = (REPO_ROOT / "samples" / "page.txt").read_text().strip()


KEY = "tests-key-0123456789abcdef"
FLOOD_KEY = "flood-key-0123456789abcdef"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    config = StackConfig.on_free_ports(
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        api_keys={"tests": KEY, "flood": FLOOD_KEY},
        requests_per_minute=600,  # a token every 0.1 s per key, 20 at once
        burst=20,
        extra_env={"HW_CORRECTIONS_URI": str(tmp_path_factory.mktemp("corrections"))},
    )
    local = LocalStack(config)
    local.start()
    yield local
    local.stop()


def grpc_address(stack) -> str:
    return f"127.0.0.1:{stack.config.orchestrator_port}"


def rest_call(stack, path: str, body: dict | None = None, key: str | None = KEY) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a REST call through Envoy, with the API key `key`."""
    headers = {"content-type": "application/json", **({"x-api-key": key} if key else {})}
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.config.envoy_port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def rest(stack, path: str, body: dict | None = None, key: str | None = KEY) -> tuple[int, dict]:
    return rest_call(stack, path, body, key)[:2]


def test_health_of_the_three_services_and_no_reflection_by_default(stack):
    expected = {
        stack.config.orchestrator_port: "handwriting.v1.OcrService",
        stack.config.detector_port: "handwriting.v1.DetectorService",
        stack.config.recognizer_port: "handwriting.v1.RecognizerService",
    }
    for port, service in expected.items():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.RpcError) as caught:
                next(reflection.ServerReflectionInfo(iter([request])))
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
            assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_sample_page_is_read_through_grpc(stack, sample_page):
    with OcrClient(grpc_address(stack)) as client:
        response = client.process_page(sample_page)
    page = response.page
    truth_words = TRUTH.split()
    words = [word for line in page.lines for word in line.words]
    # the shipped models on a hand they never trained on (measured: every word found, CER 0.016)
    assert abs(len(words) - len(truth_words)) <= 0.05 * len(truth_words)
    assert len(page.lines) == len(TRUTH.splitlines())
    cer, _ = error_rates([TRUTH], [page.text])
    assert cer < 0.10, page.text
    for word in words:
        xs = [v.x for v in word.bounding_poly.vertices]
        assert 0 <= min(xs) < max(xs) <= page.width and 0 <= word.confidence <= 1
        assert 0 <= word.bounding_poly.normalized_vertices[2].x <= 1


def test_bad_inputs_are_invalid_argument_and_the_stack_keeps_serving(stack, sample_page):
    truncated = sample_page.read_bytes()[:2000]
    huge = png_bytes(Image.new("L", (9000, 9000), 255))
    with OcrClient(grpc_address(stack)) as client:
        for content, reason in (
            (b"", "EMPTY_IMAGE"),
            (b"<html>not an image</html>", "UNSUPPORTED_IMAGE"),
            (truncated, "CORRUPT_IMAGE"),
            (huge, "TOO_MANY_PIXELS"),
        ):
            with pytest.raises(OcrError) as caught:
                client.process_page(content)
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.reason == reason and caught.value.violations[0][0] == "image.content"
        assert client.process_page(sample_page).page.lines


def cli_ocr(stack, sample_page, output_format: str, *options: str) -> str:
    """`handwriting ocr --format <output_format> [options]` on the sample page against the stack; its stdout."""
    command = [sys.executable, "-m", "handwriting.cli", "ocr", "--format", output_format, *options]
    result = subprocess.run(
        [*command, "--address", grpc_address(stack), str(sample_page)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_prints_json(stack, sample_page):
    page = json.loads(cli_ocr(stack, sample_page, "json"))["page"]
    assert page["lines"] and page["lines"][0]["words"][0]["boundingPoly"]["vertices"]


def test_cli_writes_page_xml_that_the_schema_accepts(stack, sample_page):
    import xmlschema

    xml = cli_ocr(stack, sample_page, "page")
    xmlschema.XMLSchema(str(REPO_ROOT / "handwriting" / "schemas" / "page-2019-07-15.xsd")).validate(xml)
    assert abs(xml.count("<Word ") - len(TRUTH.split())) <= 0.05 * len(TRUTH.split())


def test_rest_round_trip_through_envoy(stack, sample_page):
    body = {"image": {"content": base64.b64encode(sample_page.read_bytes()).decode()}}
    status, payload = rest(stack, "/v1/pages:process", body)
    assert status == 200
    assert payload["page"]["width"] == 1000 and payload["page"]["lines"]
    assert payload["page"]["lines"][0]["words"][0]["text"] == payload["page"]["text"].split()[0]


def test_a_pdf_is_read_page_by_page_over_grpc_rest_and_the_cli(stack, sample_page, tmp_path):
    import io

    page = Image.open(sample_page).convert("RGB")
    buffer = io.BytesIO()
    page.save(buffer, "PDF", save_all=True, append_images=[page.crop((0, 0, 1000, 300))], resolution=100)
    pdf = buffer.getvalue()
    with OcrClient(grpc_address(stack)) as client:
        pages = list(client.process_document(pdf, dpi=100))
    assert [(p.page_number, p.page_count) for p in pages] == [(1, 2), (2, 2)]
    assert error_rates([TRUTH], [pages[0].page.text])[0] < 0.10
    assert pages[1].page.text.split()[:3] == pages[0].page.text.split()[:3]  # the top of the same page
    status, body = rest(stack, "/v1/documents:process", {"content": base64.b64encode(pdf).decode(), "dpi": 100})
    assert status == 200 and [p["pageNumber"] for p in body] == [1, 2]  # a JSON array, one element a page
    assert body[0]["page"]["text"] == pages[0].page.text
    upload = urllib.request.Request(  # the raw file as the body: no base64, no JSON
        f"http://127.0.0.1:{stack.config.envoy_port}/v1/documents:upload?dpi=100",
        data=pdf,
        headers={"content-type": "application/pdf", "x-api-key": KEY},
    )
    with urllib.request.urlopen(upload, timeout=120) as response:
        uploaded = json.loads(response.read())
    assert [p["page"]["text"] for p in uploaded] == [p.page.text for p in pages]
    document = tmp_path / "two-pages.pdf"
    document.write_bytes(pdf)
    assert cli_ocr(stack, document, "text", "--dpi", "100") == pages[0].page.text + "\n" + pages[1].page.text + "\n"


def test_formats_page_images_exports_and_corrections_over_rest(stack, sample_page):
    from services.orchestrator.corrections import DirectoryStore

    upload = urllib.request.Request(
        f"http://127.0.0.1:{stack.config.envoy_port}/v1/documents:upload"
        "?formats=EXPORT_FORMAT_ALTO&formats=EXPORT_FORMAT_HOCR&includePageImage=true",
        data=sample_page.read_bytes(),
        headers={"content-type": "image/png", "x-api-key": KEY},
    )
    with urllib.request.urlopen(upload, timeout=120) as response:
        [result] = json.loads(response.read())
    assert [e["format"] for e in result["exports"]] == ["EXPORT_FORMAT_ALTO", "EXPORT_FORMAT_HOCR"]
    assert result["pageImage"]["mimeType"] == "image/jpeg"
    page = result["page"]
    word = page["lines"][0]["words"][0]
    assert word["text"] in result["exports"][0]["content"] and "needsReview" in word

    status, exported = rest(stack, "/v1/pages:export", {"page": page, "format": "EXPORT_FORMAT_PAGE_XML"})
    assert status == 200 and exported["export"]["fileExtension"] == ".page.xml"
    assert word["text"] in exported["export"]["content"]

    correction = {
        "image": {"content": base64.b64encode(sample_page.read_bytes()).decode()},
        "boundingPoly": word["boundingPoly"],
        "text": "Corrected",
        "recognizedText": word["text"],
        "confidence": word["confidence"],
    }
    status, stored = rest(stack, "/v1/corrections", correction)
    assert status == 200 and stored["correctionId"]
    store = DirectoryStore(stack.config.extra_env["HW_CORRECTIONS_URI"])
    assert {i: r["text"] for i, _, r in store.items()}[stored["correctionId"]] == "Corrected"
    status, refused = rest(stack, "/v1/corrections", {**correction, "text": ""})
    assert status == 400 and "text" in refused["message"]
    assert rest(stack, "/v1/corrections", correction, key=None)[0] == 401


def test_the_client_exports_and_corrects_through_envoy(stack, sample_page):
    from services.orchestrator.corrections import DirectoryStore

    with OcrClient(f"127.0.0.1:{stack.config.envoy_port}", api_key=KEY) as client:
        response = client.process_page(sample_page)
        word = response.page.lines[1].words[0]
        alto = client.export_page(response.page, "EXPORT_FORMAT_ALTO", "sample.png")
        correction_id = client.submit_correction(sample_page, word, "Written", source="sample.png")
        with pytest.raises(OcrError) as caught:
            client.export_page(response.page, 0)
    assert alto.file_extension == ".alto.xml" and f'CONTENT="{word.text}"' in alto.content
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.reason == "BAD_FORMAT"
    records = {i: r for i, _, r in DirectoryStore(stack.config.extra_env["HW_CORRECTIONS_URI"]).items()}
    assert records[correction_id]["recognized_text"] == word.text and records[correction_id]["text"] == "Written"


def test_the_web_page_reads_the_sample_page_and_takes_a_correction_in_chromium(stack, sample_page, tmp_path):
    """The page Envoy serves at /, in Debian's chromium driven by Playwright: upload the sample page, see a box
    over each word and the text, correct a word (stored), download ALTO."""
    from playwright.sync_api import sync_playwright

    from services.orchestrator.corrections import DirectoryStore

    chromium = "/usr/bin/chromium"
    assert os.path.exists(chromium), "the web page test needs Debian's chromium: apt-get install chromium"
    base = f"http://127.0.0.1:{stack.config.envoy_port}"
    with urllib.request.urlopen(f"{base}/", timeout=10) as response:  # no key needed for the page itself
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["content-security-policy"]
    store = DirectoryStore(stack.config.extra_env["HW_CORRECTIONS_URI"])
    before = {i for i, _, _ in store.items()}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True)
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(base + "/")
            page.fill("#key", KEY)
            page.set_input_files("#file", str(sample_page))
            page.click("#read")
            page.wait_for_selector("section.page", timeout=90_000)
            words = page.locator("span.word")
            boxes = page.locator("svg rect.box")
            truth_words = TRUTH.split()
            assert abs(boxes.count() - len(truth_words)) <= 0.05 * len(truth_words)
            assert words.count() == boxes.count()
            shown = " ".join(page.locator(".lines p").all_inner_texts())
            assert error_rates([" ".join(truth_words)], [" ".join(shown.split())])[0] < 0.10
            assert page.locator("svg").first.get_attribute("viewBox") == "0 0 1000 480"

            first = boxes.first
            first.click()
            page.fill("#editText", "Handwritten")
            page.press("#editText", "Enter")
            page.wait_for_selector("span.word.corrected", timeout=10_000)
            assert words.first.inner_text() == "Handwritten"
            assert "Stored the correction" in page.inner_text("#status")

            with page.expect_download() as download:
                page.click("button[data-format=EXPORT_FORMAT_ALTO]")
            download.value.save_as(tmp_path / "page.alto.xml")
            alto = (tmp_path / "page.alto.xml").read_text()
            assert download.value.suggested_filename == "page.alto.xml"
            assert 'CONTENT="Handwritten"' in alto and "ns-v4" in alto
            # a PDF: each page shown over the image the service rendered (the browser does not render PDFs)
            import io

            pdf = tmp_path / "two-pages.pdf"
            image = Image.open(sample_page).convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, "PDF", save_all=True, append_images=[image.crop((0, 0, 1000, 300))], resolution=100)
            pdf.write_bytes(buffer.getvalue())
            page.fill("#dpi", "100")
            page.set_input_files("#file", str(pdf))
            page.click("#read")
            page.wait_for_selector("section.page[data-page='2']", timeout=90_000)
            sources = page.locator("section.page img").evaluate_all("images => images.map(i => i.src.slice(0, 23))")
            assert sources == ["data:image/jpeg;base64,"] * 2
            sizes = page.locator("section.page img").evaluate_all("images => images.map(i => i.naturalWidth)")
            assert sizes == [1000, 1000]
            assert "page 2 of 2" in page.inner_text("#status")
            assert not errors, errors
        finally:
            browser.close()
    added = [(i, r) for i, _, r in store.items() if i not in before]
    assert len(added) == 1 and added[0][1]["text"] == "Handwritten" and added[0][1]["source"] == "page.png"


def test_the_deploy_smoke_test_passes_against_the_stack_and_fails_without_a_key(stack):
    from deploy.aws import smoke

    url = f"http://127.0.0.1:{stack.config.envoy_port}"
    passed, summary = smoke.smoke(url, KEY, max_cer=0.10, timeout=60)
    assert passed, summary
    passed, summary = smoke.smoke(url, "", max_cer=0.10, timeout=60)
    assert not passed and summary.startswith("HTTP 401")


def test_grpc_through_envoy(stack, sample_page):
    with OcrClient(f"127.0.0.1:{stack.config.envoy_port}", api_key=KEY) as client:
        assert client.process_page(sample_page).page.lines


def test_a_blank_page_has_no_words(stack):
    paper = Image.effect_noise((900, 1200), 6).point(lambda v: 230 + (v - 128) // 8).convert("RGB")
    with OcrClient(grpc_address(stack)) as client:
        for image in (Image.new("RGB", (1000, 1300), "white"), paper):
            page = client.process_page(png_bytes(image)).page
            assert not page.lines and page.text == ""


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef"])
def test_without_a_valid_key_rest_is_401_and_grpc_unauthenticated(stack, sample_page, key):
    body = {"image": {"content": base64.b64encode(sample_page.read_bytes()).decode()}}
    assert rest(stack, "/v1/pages:process", body, key=key)[0] == 401
    client = OcrClient(f"127.0.0.1:{stack.config.envoy_port}", api_key=key or "", retries=0)
    with client, pytest.raises(OcrError) as caught:
        client.process_page(sample_page)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_key(stack):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.config.envoy_port}/healthz", timeout=10) as response:
        assert response.status == 200
    with OcrClient(f"127.0.0.1:{stack.config.envoy_port}", api_key="") as client:
        assert client.health("handwriting.v1.OcrService") == "SERVING"


def test_pages_past_the_orchestrators_capacity_get_429_over_rest_with_when_to_retry(stack, sample_page):
    from concurrent.futures import ThreadPoolExecutor

    from services.common.settings import OrchestratorSettings

    body = {"image": {"content": base64.b64encode(sample_page.read_bytes()).decode()}}
    sent = OrchestratorSettings().max_pages_in_flight + 8  # at once, from two keys: within each key's burst of 20
    with ThreadPoolExecutor(sent) as pool:
        answers = list(
            pool.map(lambda i: rest_call(stack, "/v1/pages:process", body, (KEY, FLOOD_KEY)[i % 2]), range(sent))
        )
    assert {status for status, _, _ in answers} <= {200, 429}
    refused = [(payload, headers) for status, payload, headers in answers if status == 429]
    assert refused, "every page was admitted"
    for payload, headers in refused:  # said at once, with when to come back: in the body and as the HTTP header
        details = {d["@type"].rsplit(".", 1)[-1]: d for d in payload["details"]}
        assert details["ErrorInfo"]["reason"] == "OVERLOADED" and details["RetryInfo"]["retryDelay"] == "1s"
        assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
    assert sum(status == 200 for status, _, _ in answers) >= OrchestratorSettings().max_pages_in_flight


def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_are_not_slowed(stack):
    statuses, limited_headers = [], None
    for _ in range(60):  # Envoy answers these itself (no such path): 60 take well under the 0.1 s x 40 refill
        status, _, headers = rest_call(stack, "/v1/nothing:here", {}, key=FLOOD_KEY)
        statuses.append(status)
        if status == 429:
            limited_headers = {k.lower(): v for k, v in headers.items()}
    assert statuses[:20] == [404] * 20 and 429 in statuses
    assert int(limited_headers["retry-after"]) >= 1
    assert rest(stack, "/v1/nothing:here", {}, key=KEY)[0] == 404  # another key has its own bucket
    with OcrClient(f"127.0.0.1:{stack.config.envoy_port}", api_key=FLOOD_KEY, retries=0) as client:
        for _ in range(10):
            try:
                client.process_page(b"x")
            except OcrError as error:
                if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    break
        else:
            pytest.fail("gRPC calls over the rate were not refused")


def test_envoy_admin_is_only_on_a_private_unix_socket(stack):
    from deploy.envoy.config import admin_get

    assert stack.envoy_admin.stat().st_mode & 0o777 == 0o600
    assert admin_get(stack.envoy_admin, "/ready")[0] == 200
    for path in ("/ready", "/config_dump", "/quitquitquit"):
        assert rest(stack, path, {})[0] == 404  # not the admin interface
    assert stack.poll() is None


def test_rest_invalid_image_is_400_with_detail(stack):
    status, payload = rest(stack, "/v1/pages:process", {"image": {"content": base64.b64encode(b"nope").decode()}})
    assert status == 400
    assert payload["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violation = next(d for d in payload["details"] if d["@type"].endswith("BadRequest"))["fieldViolations"][0]
    assert violation["field"] == "image.content"


def test_unknown_path_is_404(stack):
    assert rest(stack, "/v1/nothing:here", {}) == (404, {"status": 404, "message": "no such path"})
    assert rest(stack, "/admin")[0] == 404


def test_tls_round_trip_through_envoy_with_a_self_signed_certificate(stack, sample_page, tmp_path):
    import ssl

    from deploy.envoy.config import Edge, start_envoy
    from deploy.envoy.tls import make_self_signed
    from handwriting.stack import free_port

    cert, key = make_self_signed(tmp_path / "tls")
    assert key.stat().st_mode & 0o777 == 0o600
    port = free_port()
    envoy, _ = start_envoy(
        port, grpc_address(stack), tmp_path, edge=Edge({"tests": KEY}, tls_cert=str(cert), tls_key=str(key))
    )
    try:
        with OcrClient(f"localhost:{port}", api_key=KEY, tls_ca=cert) as client:
            assert client.process_page(sample_page).page.lines  # gRPC over TLS (h2 by ALPN)
        body = json.dumps({"image": {"content": base64.b64encode(sample_page.read_bytes()).decode()}}).encode()
        request = urllib.request.Request(
            f"https://localhost:{port}/v1/pages:process",
            data=body,
            headers={"content-type": "application/json", "x-api-key": KEY},
        )
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(request, timeout=60, context=context) as response:  # REST over TLS
            assert response.status == 200 and json.loads(response.read())["page"]["lines"]
        plain = OcrClient(f"localhost:{port}", api_key=KEY, retries=0, timeout=5)  # no TLS: refused
        with plain, pytest.raises(OcrError) as caught:
            plain.process_page(sample_page)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        envoy.terminate()
        envoy.wait(10)


def _jwt(key, claims: dict, kid: str = "k1") -> str:
    """An ES256 JWT signed with `key` (cryptography's EC key)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def test_jwts_as_the_alternative_to_api_keys(stack, sample_page, tmp_path):
    import time

    from cryptography.hazmat.primitives.asymmetric import ec

    from deploy.envoy.config import Edge, start_envoy
    from handwriting.stack import free_port

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()

    def coordinate(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    jwk = {"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "x": coordinate(numbers.x), "y": coordinate(numbers.y)}]}))
    edge = Edge(jwks_file=str(jwks), jwt_issuer="https://idp.example", jwt_audience="handwriting")
    port = free_port()
    envoy, _ = start_envoy(port, grpc_address(stack), tmp_path, edge=edge)
    claims = {"iss": "https://idp.example", "aud": "handwriting", "sub": "alice", "exp": int(time.time()) + 600}
    try:
        good = _jwt(key, claims)
        unauthenticated, forbidden = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
        tokens = {
            "none": (None, unauthenticated),
            "forged": (_jwt(other, claims), unauthenticated),
            "expired": (_jwt(key, {**claims, "exp": int(time.time()) - 600}), unauthenticated),  # past 60 s of skew
            "other audience": (_jwt(key, {**claims, "aud": "someone-else"}), forbidden),  # Envoy: 403
        }
        for name, (token, code) in tokens.items():
            client = OcrClient(f"127.0.0.1:{port}", bearer_token=token or "", retries=0)
            with client, pytest.raises(OcrError) as caught:
                client.process_page(sample_page)
            assert caught.value.code == code, name
        with OcrClient(f"127.0.0.1:{port}", bearer_token=good) as client:
            assert client.process_page(sample_page).page.lines
            assert client.health("handwriting.v1.OcrService") == "SERVING"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200  # no token needed
    finally:
        envoy.terminate()
        envoy.wait(10)


def test_stopped_orchestrator_gives_503(stack, sample_page):
    """Last on purpose: it stops the orchestrator."""
    orchestrator = stack.processes["orchestrator"]
    orchestrator.send_signal(signal.SIGTERM)
    orchestrator.wait(30)
    body = {"image": {"content": base64.b64encode(sample_page.read_bytes()).decode()}}
    status, payload = rest(stack, "/v1/pages:process", body)
    assert status == 503 and payload["status"] == 503
