#!/usr/bin/env bash
# The web page's test drives Debian's chromium with Playwright (Playwright's own browser download is not
# reachable here). Installs it with apt when missing and this runs as root (CI); otherwise says what to do.
set -euo pipefail
BROWSER=/usr/bin/chromium
if [ -x "$BROWSER" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium (apt) for the web page test"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
else
  echo "the web page test needs $BROWSER: sudo apt-get install chromium" >&2
  exit 1
fi
