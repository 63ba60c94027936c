"""Pages a minute under load: a closed loop of C clients, each sending the page again as soon as its last
answer came, at C = 1, 4, 16 and 64, through gRPC to the orchestrator and through Envoy (gRPC, with an
API key); the peers (rapidocr, tesseract) on the same page in the same run, one page at a time. Prints a
table, writes it with a plot; asserts nothing.

    .venv/bin/python benchmarks/load.py [--image samples/page.png] [--seconds 40] [--out runs/load]
    .venv/bin/python benchmarks/load.py --envoy 127.0.0.1:18080 --api-key K   # a running stack, through Envoy
    python3 benchmarks/load.py --no-envoy --no-peers --env HW_DEVICE=cuda ...    # a GPU machine (scripts/gpu_run.sh)

Each level runs `--seconds` after a warm-up call; a request counts when its answer arrives. Pages/min is
answered-OK pages over the level's wall time; latency percentiles are over the OK answers; refusals are
counted by gRPC code (RESOURCE_EXHAUSTED is the admission limit, HW_MAX_PAGES_IN_FLIGHT, with its RetryInfo; one
without RetryInfo is counted apart: it came from further in, a model service's queue or gRPC's own cap on calls,
after the page was admitted); a refused client waits the RetryInfo delay before it sends again, as a well-behaved
client does. For a local stack, each
level also gives the CPU time each process used per OK page and the cores the services kept busy on average
(from /proc: what batching across requests saves, or contention costs), and the load clients' own CPU a page
(this process: on a small machine, cores the services could not have). The RSS of each service is
read from /proc after the run (with --envoy the stack is someone else's: `docker stats` for containers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from handwriting import OcrClient, OcrError  # noqa: E402
from handwriting.stack import LocalStack, StackConfig  # noqa: E402

KEY = "load-benchmark-key-0123456789"
LEVELS = (1, 4, 16, 64)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


def closed_loop(address: str, image: bytes, clients: int, seconds: float, api_key: str = "") -> dict:
    """`clients` threads, each with its own channel, sending `image` back to back for `seconds`."""
    latencies: list[float] = []
    codes: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop() -> None:
        with OcrClient(address, timeout=120, retries=0, api_key=api_key) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                wait = 0.0
                try:
                    client.process_page(image)
                    code = "OK"
                except OcrError as error:
                    code = error.code.name
                    wait = error.retry_after or 0.0  # a well-behaved client waits as long as it is told
                    if code == "RESOURCE_EXHAUSTED" and not wait:  # not the admission's refusal: counted apart
                        code += " without RetryInfo"
                elapsed = time.perf_counter() - started
                with lock:
                    codes[code] += 1
                    if code == "OK":
                        latencies.append(elapsed)
                if wait:
                    time.sleep(min(wait, max(0.0, stop_at - time.monotonic())))

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return {
        "clients": clients,
        "pages_per_min": 60 * codes["OK"] / wall,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "codes": dict(codes),
        "wall_s": wall,
    }


def peers(image: Path, repeats: int) -> dict[str, dict]:
    from training.evaluate import rapidocr, tesseract

    results = {}
    for name, make in (("rapidocr", rapidocr), ("tesseract", tesseract)):
        try:
            engine = make()
        except ImportError as error:
            results[name] = {"missing": str(error)}
            continue
        engine(image)  # warm-up
        seconds = [engine(image).seconds for _ in range(repeats)]
        results[name] = {"pages_per_min": 60 / statistics.mean(seconds), "p50_ms": 1000 * statistics.median(seconds)}
    return results


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used (its threads together), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def plot(rows: list[dict], peer_rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for route in sorted({row["route"] for row in rows}):
        mine = [row for row in rows if row["route"] == route]
        left.plot([r["clients"] for r in mine], [r["pages_per_min"] for r in mine], marker="o", label=route)
        right.plot([r["clients"] for r in mine], [r["p50_ms"] / 1000 for r in mine], marker="o", label=f"{route} p50")
        right.plot([r["clients"] for r in mine], [r["p99_ms"] / 1000 for r in mine], ls="--", label=f"{route} p99")
    for name, peer in peer_rows.items():
        if "pages_per_min" in peer:
            left.axhline(peer["pages_per_min"], ls=":", color="gray")
            left.annotate(name, (1, peer["pages_per_min"]), fontsize=8, color="gray")
    for axis, label in ((left, "pages / min (OK answers)"), (right, "latency of OK answers, s")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients (closed loop)")
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=REPO_ROOT / "samples" / "page.png")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--peer-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "load")
    parser.add_argument("--envoy", help="HOST:PORT of a running stack's Envoy: load it instead of a local stack")
    parser.add_argument("--api-key", help="the key that Envoy asks for (HW_API_KEYS)")
    parser.add_argument(
        "--no-envoy", dest="local_envoy", action="store_false", help="the local stack without Envoy (gRPC only)"
    )
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="leave rapidocr and tesseract out")
    parser.add_argument(
        "--env", action="append", default=[], metavar="HW_NAME=VALUE", help="a setting of the local stack's services"
    )
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    image = args.image.read_bytes()
    args.out.mkdir(parents=True, exist_ok=True)

    stack = None
    if args.envoy:
        routes = {"Envoy gRPC": (args.envoy, args.api_key or "")}
    else:
        config = StackConfig.on_free_ports(
            envoy=args.local_envoy,
            log_dir=args.out / "logs",
            api_keys={"load": KEY},
            requests_per_minute=1_000_000,
            burst=1000,
            extra_env=extra_env,
        )
        stack = LocalStack(config)
        stack.start()
        routes = {"gRPC": (f"127.0.0.1:{config.orchestrator_port}", "")}
        if config.envoy_port:
            routes["Envoy gRPC"] = (f"127.0.0.1:{config.envoy_port}", KEY)
    rows, memory = [], {}
    try:
        for route, (address, key) in routes.items():
            closed_loop(address, image, 1, 0.1, key)  # warm-up: one page
            for clients in args.levels:
                pids = {name: process.pid for name, process in stack.processes.items()} if stack else {}
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                own_before = cpu_seconds(os.getpid())
                row = {"route": route, **closed_loop(address, image, clients, args.seconds, key)}
                used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
                pages = max(1, row["codes"].get("OK", 0))
                # CPU a page, by process: what batching across requests saves or contention costs
                row["cpu_s_per_page"] = {name: seconds / pages for name, seconds in used.items()}
                row["cores_busy"] = sum(used.values()) / row["wall_s"]
                # the clients' own share of the machine (this process), which the services cannot have
                row["cpu_s_per_page"]["load clients"] = (cpu_seconds(os.getpid()) - own_before) / pages
                rows.append(row)
                print(json.dumps(row), flush=True)
        if stack is not None:
            memory = {name: rss_mb(process.pid) for name, process in stack.processes.items()}
    finally:
        if stack is not None:
            stack.stop()
    peer_rows = peers(args.image, args.peer_repeats) if args.peers else {}

    lines = [
        f"{args.image.name}, closed loop, {args.seconds:.0f} s per level, this machine"
        + "".join(f", {item}" for item in args.env),
        "| route | clients | pages/min | p50 s | p95 s | p99 s | answers by code | CPU s a page | cores busy |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for row in rows:
        codes = ", ".join(f"{code} {count}" for code, count in sorted(row["codes"].items()))
        cpu = ", ".join(f"{name} {seconds:.2f}" for name, seconds in row.get("cpu_s_per_page", {}).items())
        busy = f"{row['cores_busy']:.2f}" if "cores_busy" in row else ""
        lines.append(
            f"| {row['route']} | {row['clients']} | {row['pages_per_min']:.1f} | {row['p50_ms'] / 1000:.2f} | "
            f"{row['p95_ms'] / 1000:.2f} | {row['p99_ms'] / 1000:.2f} | {codes} | {cpu} | {busy} |"
        )
    for name, peer in peer_rows.items():
        if "missing" in peer:
            lines.append(f"| {name} | - | not installed | | | | | | |")
        else:
            lines.append(
                f"| {name} (in process, one page at a time) | 1 | {peer['pages_per_min']:.1f} | "
                f"{peer['p50_ms'] / 1000:.2f} | | | | | |"
            )
    if memory:
        lines.append("")
        lines.append("RSS after the run: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in memory.items()))
    table = "\n".join(lines)
    print(table)
    (args.out / "load.md").write_text(table + "\n")
    (args.out / "load.json").write_text(json.dumps({"rows": rows, "peers": peer_rows, "rss_mb": memory}, indent=1))
    plot(rows, peer_rows, args.out / "load.png")
    print(f"wrote {args.out / 'load.md'} and {args.out / 'load.png'}")


if __name__ == "__main__":
    main()
