#!/usr/bin/env bash
# Installs what the browser tests of `pytc-eval view` (pytest -m browser) need, when missing:
# Debian's chromium, its chromedriver and xvfb (a real X server: headless Chrome's software
# WebGL is unreliable, so the tests run a windowed chromium under `xvfb-run -a`).
#
#   tests/browser/install-browser.sh && xvfb-run -a uv run pytest -m browser
#
# Needs root for apt-get (CI and the developers' machines run as root).
set -euo pipefail

log() { echo "install-browser: $*" >&2; }

if command -v chromium >/dev/null && command -v chromedriver >/dev/null \
    && command -v xvfb-run >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    log "error: chromium, chromium-driver and xvfb are not installed and installing them needs root"
    exit 2
fi
log "installing chromium, chromium-driver and xvfb (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq chromium chromium-driver xvfb >&2
