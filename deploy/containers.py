"""`make containers`: build every image, run the compose stack on the CPU, use it from outside, stop it.

    python -m deploy.containers                 # build, start, check, stop; prints times and image sizes
    python -m deploy.containers --keep          # leave the stack running
    python -m deploy.containers --down          # stop a stack left running

1. A Docker engine: `docker info`, else (as root) `apt-get install docker.io` and start `dockerd`.
2. A local base image, `local/debian-python:bookworm`, made with mmdebstrap (Docker Hub is not reachable from
   these machines): Debian bookworm with python3, python3-venv and this machine's CA bundle.
3. The four images (`BASE`/`CUDA_BASE` build arguments set to that base), with the network of the host for pip;
   the machine's local package folders (pip's `extra-index-url` file:// folders, where torch comes from) are
   served over loopback HTTP for the builds. Then the images the builds left untagged are removed: the
   torch stage that exports the CPU images' graphs and the images these builds replaced. No later build
   could reuse them (the index's port and the copied code change from run to run); left in place they took
   11 GB more of the disk each run (measured: `docker system df` 1.8 GB before and after a run that removes them).
4. `docker compose -f docker-compose.yml -f docker-compose.cpu.yml -f deploy/compose.local.yml up`: the CPU
   override, with an API key for this run, tracing off (the collector image comes from Docker Hub) and Envoy
   published on loopback only.
5. Waits for health, then from outside the containers: the sample page through Envoy over gRPC (OcrClient
   with the key) and over REST (the upload route), each read at CER under 0.10; 401 without the key.
6. Each service's processes run as a user other than root (`docker compose top`).
7. The recognizer's process killed with SIGKILL (a crash): compose restarts it (`restart: unless-stopped`) and the page
   reads again; the time it took is printed, with the image sizes and each service's memory.
8. `docker compose down` (unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "local/debian-python:bookworm"
PROJECT = "handwriting-ocr"
IMAGES = {  # compose service -> (Dockerfile, image, target: the model services' CPU images, without torch)
    "envoy": ("deploy/envoy/Dockerfile", "handwriting-envoy:latest", None),
    "orchestrator": ("services/orchestrator/Dockerfile", "handwriting-orchestrator:latest", None),
    "detector": ("services/detector/Dockerfile", "handwriting-detector:cpu", "cpu"),
    "recognizer": ("services/recognizer/Dockerfile", "handwriting-recognizer:cpu", "cpu"),
}
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cpu.yml", "deploy/compose.local.yml"]
SAMPLE = REPO / "samples" / "page.png"


def run(*command: str, check: bool = True, capture: bool = False, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, text=True, capture_output=capture, env=env)


def log(message: str) -> None:
    print(f"[containers {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_engine() -> None:
    if run("docker", "info", check=False, capture=True).returncode == 0:
        return
    if os.geteuid() != 0:
        raise SystemExit("no Docker engine answers, and only root can start one here: start dockerd")
    if not shutil.which("dockerd"):
        log("installing docker.io (apt)")
        run("apt-get", "update", "-q")
        run("apt-get", "install", "-y", "-q", "docker.io")
    log("starting dockerd")
    with open("/tmp/dockerd.log", "ab") as output:
        subprocess.Popen(["dockerd"], stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(60):
        if run("docker", "info", check=False, capture=True).returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("dockerd did not start: see /tmp/dockerd.log")


def ensure_base() -> None:
    if run("docker", "image", "inspect", BASE_IMAGE, check=False, capture=True).returncode == 0:
        return
    if not shutil.which("mmdebstrap"):
        run("apt-get", "install", "-y", "-q", "mmdebstrap")
    log(f"making {BASE_IMAGE} with mmdebstrap")
    with tempfile.TemporaryDirectory() as folder:
        tar = Path(folder) / "base.tar"
        hook = "copy-in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/"  # this machine's trust, for pip
        run(
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            f"--customize-hook={hook}",
            "bookworm",
            str(tar),
        )
        run("docker", "import", str(tar), BASE_IMAGE)


def local_indexes() -> list[Path]:
    """pip's file:// package folders on this machine (pip config), which the builds cannot see."""
    listing = run(sys.executable, "-m", "pip", "config", "list", check=False, capture=True).stdout
    folders = []
    for line in listing.splitlines():
        if "index-url" in line:
            value = line.split("=", 1)[1].strip().strip("'\"")
            folders += [Path(url.removeprefix("file://")) for url in value.split() if url.startswith("file://")]
    return [folder for folder in folders if folder.is_dir()]


@contextlib.contextmanager
def serve_indexes(folders: list[Path]):
    """The folders over HTTP on loopback (their common parent as the root): the extra index URLs for pip."""
    if not folders:
        yield ""
        return
    root = Path(os.path.commonpath([folder.parent for folder in folders]))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        yield " ".join(f"http://127.0.0.1:{port}/{folder.relative_to(root)}" for folder in folders)
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def build(extra_index: str) -> dict[str, float]:
    seconds = {}
    for service, (dockerfile, image, target) in IMAGES.items():
        started = time.monotonic()
        arguments = [f"BASE={BASE_IMAGE}", f"CUDA_BASE={BASE_IMAGE}", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"]
        if extra_index:
            arguments.append(f"PIP_EXTRA_INDEX_URL={extra_index}")
        log(f"building {image}")
        run(
            "docker",
            "build",
            "--network",
            "host",
            "-q",
            "-f",
            dockerfile,
            "-t",
            image,
            *(["--target", target] if target else []),
            *[part for argument in arguments for part in ("--build-arg", argument)],
            ".",
            env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder: no frontend image to pull
        )
        seconds[service] = time.monotonic() - started
    return seconds


def untagged() -> set[str]:
    """The engine's untagged top-level images (what `docker image prune` would remove)."""
    return set(run("docker", "images", "-q", "--no-trunc", "-f", "dangling=true", capture=True).stdout.split())


def remove_left_behind(before: set[str]) -> None:
    """Remove the images that became untagged since `before`: this run's build stages and the images it replaced."""
    root = run("docker", "info", "-f", "{{.DockerRootDir}}", capture=True).stdout.strip()
    free = shutil.disk_usage(root).free
    left = sorted(untagged() - before)
    if left:
        run("docker", "rmi", *left, check=False, capture=True)
    freed = (shutil.disk_usage(root).free - free) / 1e9
    log(f"removed {len(left)} untagged images the builds left ({freed:.1f} GB freed on {root}'s disk)")


def compose(*arguments: str, capture: bool = False, check: bool = True, env=None) -> subprocess.CompletedProcess:
    files = [part for name in COMPOSE_FILES for part in ("-f", str(REPO / name))]
    binary = shutil.which("docker-compose", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return run(binary or "docker-compose", "-p", PROJECT, *files, *arguments, capture=capture, check=check, env=env)


def wait_healthy(timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        states = {}
        for service in IMAGES:
            container = compose("ps", "-q", service, capture=True, check=False).stdout.strip()
            if container:
                inspect = run(
                    "docker", "inspect", "-f", "{{.State.Health.Status}}", container, check=False, capture=True
                )
                states[service] = inspect.stdout.strip()
        if states and all(state == "healthy" for state in states.values()) and len(states) == len(IMAGES):
            return time.monotonic() - started
        time.sleep(2)
    raise TimeoutError(f"not healthy after {timeout:.0f} s: {states}")


def read_sample(port: int, key: str) -> tuple[float, float]:
    """CER of the sample page through Envoy over gRPC and over REST."""
    from handwriting import OcrClient
    from training.metrics import error_rates

    truth = (REPO / "samples" / "page.txt").read_text().strip()
    with OcrClient(f"127.0.0.1:{port}", api_key=key, timeout=120) as client:
        grpc_text = client.process_page(SAMPLE).page.text
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/documents:upload",
        data=SAMPLE.read_bytes(),
        headers={"content-type": "image/png", "x-api-key": key},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        rest_text = json.loads(response.read())[0]["page"]["text"]
    return error_rates([truth], [grpc_text])[0], error_rates([truth], [rest_text])[0]


def refused_without_key(port: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/documents:upload", data=b"x", headers={"content-type": "image/png"}
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        return error.code == 401
    return False


def users() -> dict[str, set[str]]:
    """The user id of every process in each service's container."""
    found = {}
    for service in IMAGES:
        container = compose("ps", "-q", service, capture=True).stdout.strip()
        rows = run("docker", "top", container, "-o", "pid,uid", capture=True).stdout.splitlines()[1:]
        found[service] = {row.split()[1] for row in rows if row.strip()}
    return found


def memory() -> dict[str, str]:
    """Each service's memory in use (`docker stats`: the container's cgroup, page cache excluded)."""
    found = {}
    for service in IMAGES:
        container = compose("ps", "-q", service, capture=True).stdout.strip()
        stats = run("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container, capture=True)
        found[service] = stats.stdout.strip().split(" / ")[0]
    return found


def image_sizes() -> dict[str, str]:
    return {
        image: run("docker", "image", "inspect", "-f", "{{.Size}}", image, capture=True).stdout.strip()
        for _, image, _ in IMAGES.values()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    parser.add_argument("--port", type=int, default=18080, help="Envoy published on 127.0.0.1:PORT")
    parser.add_argument("--down", action="store_true", help="stop the stack that --keep left running")
    args = parser.parse_args(argv)
    started = time.monotonic()
    os.chdir(REPO)
    if args.down:  # the compose files need a key and a port to be read at all; neither matters to `down`
        os.environ |= {"HW_API_KEYS": "down:down", "HW_ENVOY_PUBLISH": f"127.0.0.1:{args.port}"}
        return compose("down", "--timeout", "20", check=False).returncode
    ensure_engine()
    ensure_base()
    build_seconds = {}
    if not args.no_build:
        before = untagged()
        try:
            with serve_indexes(local_indexes()) as extra_index:
                build_seconds = build(extra_index)
        finally:
            remove_left_behind(before)
    key = "containers-" + secrets.token_hex(12)
    os.environ |= {"HW_API_KEYS": f"containers:{key}", "HW_ENVOY_PUBLISH": f"127.0.0.1:{args.port}"}
    failures = []
    try:
        up = time.monotonic()
        compose("up", "-d", "--no-build")
        healthy = wait_healthy(300)
        log(f"healthy {healthy:.0f} s after up")
        grpc_cer, rest_cer = read_sample(args.port, key)
        log(f"sample page through Envoy: gRPC CER {grpc_cer:.3f}, REST CER {rest_cer:.3f}")
        failures += [
            f"CER {cer:.3f} over {kind}" for kind, cer in (("gRPC", grpc_cer), ("REST", rest_cer)) if cer >= 0.1
        ]
        if not refused_without_key(args.port):
            failures.append("a call without the key was not refused with 401")
        for service, uids in users().items():
            log(f"{service}: processes run as uid {', '.join(sorted(uids))}")
            if "0" in uids or not uids:
                failures.append(f"{service} runs a process as root")
        # a crash, not a stop: SIGKILL to the container's process from the host (`docker kill` would count as
        # stopping it by hand, which a restart policy respects)
        container = compose("ps", "-q", "recognizer", capture=True).stdout.strip()
        pid = int(run("docker", "inspect", "-f", "{{.State.Pid}}", container, capture=True).stdout)
        killed = time.monotonic()
        os.kill(pid, 9)
        time.sleep(2)
        wait_healthy(300)
        grpc_cer, _ = read_sample(args.port, key)
        back = time.monotonic() - killed
        log(f"recognizer killed: restarted by compose and reading again (CER {grpc_cer:.3f}) in {back:.0f} s")
        if grpc_cer >= 0.1:
            failures.append(f"CER {grpc_cer:.3f} after the restart")
        summary = {
            "build_seconds": {k: round(v) for k, v in build_seconds.items()},
            "up_to_healthy_seconds": round(healthy),
            "image_bytes": image_sizes(),
            "memory_after_the_pages": memory(),
            "total_seconds": round(time.monotonic() - started),
            "stack_seconds": round(time.monotonic() - up),
        }
        print(json.dumps(summary, indent=1))
    except Exception as error:  # noqa: BLE001 - reported with the logs of the containers
        failures.append(f"{type(error).__name__}: {error}")
        compose("logs", "--tail", "30", check=False)
    finally:
        if args.keep:
            log(f"left running: Envoy on 127.0.0.1:{args.port}, API key {key} (python -m deploy.containers --down)")
        else:
            compose("down", "--timeout", "20", check=False)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
