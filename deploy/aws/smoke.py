"""Smoke test of a deployed endpoint: OCR the sample page over REST and check what comes back.

    python -m deploy.aws.smoke --url https://staging.ocr.example.com --api-key "$KEY"

Exits 0 when the page is read with a CER under `--max-cer` (0.10: the shipped models read it at 0.01-0.02),
1 otherwise, printing why. The workflow runs it against staging before production gets the same images.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from training.metrics import error_rates  # standard library only: runs in the workflow without an install

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "samples" / "page.png"


def smoke(url: str, api_key: str, max_cer: float, timeout: float, insecure: bool = False) -> tuple[bool, str]:
    body = json.dumps({"image": {"content": base64.b64encode(SAMPLE.read_bytes()).decode()}}).encode()
    headers = {"content-type": "application/json", **({"x-api-key": api_key} if api_key else {})}
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/pages:process", data=body, headers=headers)
    context = ssl._create_unverified_context() if insecure else None
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            page = json.loads(response.read())["page"]
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}: {error.read()[:300]!r}"
    except (OSError, KeyError, ValueError) as error:
        return False, f"no page: {error}"
    seconds = time.perf_counter() - started
    reference = " ".join(SAMPLE.with_suffix(".txt").read_text().split())
    cer = error_rates([reference], [" ".join(page.get("text", "").split())])[0]
    words = sum(len(line.get("words", [])) for line in page.get("lines", []))
    summary = f"{words} words, CER {cer:.3f}, {seconds:.2f} s"
    return cer <= max_cer, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the endpoint's base URL (https://...)")
    parser.add_argument("--api-key", default="", help="an API key of the endpoint")
    parser.add_argument("--max-cer", type=float, default=0.10)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--insecure", action="store_true", help="do not check the certificate (self-signed)")
    args = parser.parse_args(argv)
    passed, summary = smoke(args.url, args.api_key, args.max_cer, args.timeout, args.insecure)
    print(f"smoke {'passed' if passed else 'FAILED'}: {summary}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
