"""Containers, compose files and Envoy's config, checked offline (no Docker engine here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deploy.envoy import config as envoy_config
from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent
DOCKERFILES = {
    "detector": REPO_ROOT / "services/detector/Dockerfile",
    "recognizer": REPO_ROOT / "services/recognizer/Dockerfile",
    "orchestrator": REPO_ROOT / "services/orchestrator/Dockerfile",
    "envoy": REPO_ROOT / "deploy/envoy/Dockerfile",
}


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is installed by the dev extra"
    return found


def compose_config(*files: str, env: dict | None = None) -> dict:
    import os

    command = [tool("docker-compose")]
    for file in files:
        command += ["-f", str(REPO_ROOT / file)]
    result = subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_runs_the_five_parts_with_gpus_for_the_models():
    services = compose_config("docker-compose.yml")["services"]
    assert set(services) == {"envoy", "orchestrator", "detector", "recognizer", "otel-collector"}
    for name in ("detector", "recognizer"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and services[name]["environment"]["HW_DEVICE"] == "cuda"
    assert services["orchestrator"]["environment"]["HW_DETECTOR_ADDRESS"] == "detector:50052"
    assert services["envoy"]["ports"][0]["published"] == "8080"
    assert "deploy" not in services["orchestrator"]


def test_cpu_override_drops_the_gpu_reservations_and_builds_the_torch_free_images():
    services = compose_config("docker-compose.yml", "docker-compose.cpu.yml")["services"]
    for name in ("detector", "recognizer"):
        assert not services[name].get("deploy")
        assert services[name]["environment"]["HW_DEVICE"] == "cpu"
        assert services[name]["build"]["target"] == "cpu" and services[name]["image"].endswith(":cpu")
        assert "\nFROM ${BASE} AS cpu\n" in DOCKERFILES[name].read_text()


def test_make_containers_runs_the_cpu_stack_on_loopback_with_a_key_and_no_collector():
    """deploy/containers.py runs it (`make containers`, a Docker engine needed: not in CI, see the README)."""
    from deploy import containers

    env = {"HW_API_KEYS": "containers:" + "k" * 24, "HW_ENVOY_PUBLISH": "127.0.0.1:18080"}
    config = compose_config(*containers.COMPOSE_FILES, env=env)
    services = config["services"]
    assert set(services) == {"envoy", "orchestrator", "detector", "recognizer"}  # the collector: profile off
    assert services["envoy"]["ports"] == [
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 8080, "published": "18080", "protocol": "tcp"}
    ]
    assert services["envoy"]["environment"]["HW_API_KEYS"] == env["HW_API_KEYS"]
    assert all(services[name]["environment"]["HW_TRACING"] == "off" for name in ("orchestrator", "recognizer"))
    assert services["orchestrator"]["volumes"][0]["target"] == "/data/corrections"
    assert {image for _, image, _ in containers.IMAGES.values()} == {s["image"] for s in services.values()}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfiles_lint_clean_and_run_as_non_root_with_a_health_check(name):
    path = DOCKERFILES[name]
    result = subprocess.run(
        [tool("hadolint"), "--config", str(REPO_ROOT / ".hadolint.yaml"), str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text
    # multi-stage: build tools stay in the build stage
    assert text.count("\nFROM ") >= 1 and " AS build" in text
    for runtime in (
        stage for stage in text.split("\nFROM ")[1:] if stage.split("\n")[0].endswith((" AS cpu", " AS gpu"))
    ):
        assert "pip install" not in runtime and "-venv" not in runtime
    runtime = text.split("\nFROM ")[-1]
    assert "pip install" not in runtime and "-venv" not in runtime


def test_model_images_use_a_cuda_base_and_the_orchestrator_a_slim_one():
    for name in ("detector", "recognizer"):
        assert "nvidia/cuda:" in DOCKERFILES[name].read_text()
        assert "MODEL_SOURCE" in DOCKERFILES[name].read_text()
    assert "python:3.11-slim" in DOCKERFILES["orchestrator"].read_text()


def test_the_openapi_document_is_current_and_valid():
    from openapi_spec_validator import validate

    from deploy.envoy import openapi

    assert openapi.main(["--check"]) == 0
    document = yaml.safe_load(openapi.OUTPUT.read_text())
    validate(document)
    assert set(document["paths"]) == {
        "/v1/pages:process",
        "/v1/pages:export",
        "/v1/documents:process",
        "/v1/documents:upload",
        "/v1/corrections",
    }
    upload = document["paths"]["/v1/documents:upload"]["post"]
    assert "application/pdf" in upload["requestBody"]["content"]
    assert {p["name"] for p in upload["parameters"]} == {"minDetectionScore", "dpi", "formats", "includePageImage"}
    streamed = document["paths"]["/v1/documents:process"]["post"]["responses"]["200"]
    assert streamed["content"]["application/json"]["schema"]["type"] == "array"
    word = document["components"]["schemas"]["Word"]["properties"]
    assert word["needsReview"]["type"] == "boolean" and "geometric mean" in word["confidence"]["description"]


def test_committed_envoy_config_is_current_and_valid(tmp_path):
    assert envoy_config.main(["--check"]) == 0
    # validate the committed file itself, with the descriptor path it will have in the image
    committed = yaml.safe_load((REPO_ROOT / "deploy/envoy/envoy.yaml").read_text())
    text = json.dumps(committed).replace("/etc/envoy/handwriting.pb", str(envoy_config.DESCRIPTOR))
    text = text.replace(envoy_config.CONTAINER_WEB, str(envoy_config.WEB_DIR))
    text = text.replace('"otel-collector"', '"127.0.0.1"')  # STRICT_DNS names must resolve to validate
    path = tmp_path / "envoy.json"
    path.write_text(text)
    envoy_config.validate(path)


@pytest.mark.parametrize("tracing", ["off", "w3c", "xray"])
def test_generated_envoy_configs_validate(tmp_path, tracing):
    config = envoy_config.build(8080, 9901, "127.0.0.1:50051", envoy_config.DESCRIPTOR, tracing, "127.0.0.1:4317")
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_config.render(config))
    envoy_config.validate(path)
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert ("tracing" in manager) == (tracing != "off")
    transcoder = next(f for f in manager["http_filters"] if f["name"].endswith("grpc_json_transcoder"))
    assert transcoder["typed_config"]["convert_grpc_status"] is True


def test_envoy_validation_rejects_a_broken_config(tmp_path):
    config = envoy_config.build(descriptor=envoy_config.DESCRIPTOR, upstream="127.0.0.1:1")
    config["static_resources"]["clusters"][0]["lb_policy"] = "NOT_A_POLICY"
    path = tmp_path / "broken.yaml"
    path.write_text(envoy_config.render(config))
    with pytest.raises(subprocess.CalledProcessError):
        envoy_config.validate(path)


def test_the_envoy_container_entrypoint_puts_the_aws_secrets_keys_in_front(tmp_path):
    """`python -m deploy.envoy.config --serve ecs` as the ECS task runs it, with HW_API_KEYS holding the
    secret's JSON and TLS on a self-signed certificate (what the ALB connects to): health open, 401 without
    a key, past the key check (503: no orchestrator here) with one."""
    import os
    import ssl
    import urllib.error
    import urllib.request

    from handwriting.stack import free_port

    port = free_port()
    secret = json.dumps({"keys": [{"client": "mobile", "key": "m" * 24}], "bootstrap": "b" * 40})
    env = {**os.environ, "HW_API_KEYS": secret, "HW_ENVOY_CONFIG": str(tmp_path / "envoy.yaml")}
    env |= {"HW_TLS_SELF_SIGNED": "true", "HW_TLS_DIR": str(tmp_path / "tls")}
    unverified = ssl._create_unverified_context()  # as the ALB: encrypted, certificate not checked
    env["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, "-m", "deploy.envoy.config", "--serve", "ecs", "--port", str(port)]
    admin = tmp_path / "admin.sock"
    env["HW_ENVOY_DESCRIPTOR"] = str(envoy_config.DESCRIPTOR)  # the image has it at /etc/envoy/handwriting.pb
    env["HW_ENVOY_WEB"] = str(envoy_config.WEB_DIR)  # and the web page in /etc/envoy/web
    process = subprocess.Popen([*command, "--admin-socket", str(admin)], env=env, cwd=REPO_ROOT)
    try:

        def status(path: str, key: str | None = None) -> int:
            headers = {"content-type": "application/json", **({"x-api-key": key} if key else {})}
            request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=b"{}", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5, context=unverified) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=1, context=unverified)
                break
            except OSError:
                assert process.poll() is None, "envoy exited"
                time.sleep(0.1)
        assert status("/v1/pages:process") == 401
        assert status("/v1/pages:process", "x" * 24) == 401
        assert status("/v1/pages:process", "m" * 24) == 503  # authenticated; no orchestrator in this test
        assert status("/v1/pages:process", "b" * 40) == 503
        assert (tmp_path / "envoy.yaml").stat().st_mode & 0o777 == 0o600
    finally:
        process.terminate()
        process.wait(10)
