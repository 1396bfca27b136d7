#!/usr/bin/env bash
# Install what the browser test (tests/e2e/test_browser.py -> tests/browser/annotate.js) needs: Debian's chromium
# (the browser Playwright drives; no browser download from elsewhere) and tests/browser/node_modules (playwright-core
# pinned in package-lock.json). Safe to re-run: apt-get runs only when chromium is missing (apt-get update only when
# the package is not known yet), npm ci only when node_modules is missing or does not match package-lock.json.
# CHROMIUM=/path/to/chromium skips the apt step when that binary exists.
set -euo pipefail
cd "$(dirname "$0")/.."
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    echo "install_browser: need root to run '$*'; run this script as root or with passwordless sudo," >&2
    echo "  or install Debian's chromium yourself (apt-get install chromium) / set CHROMIUM=/path/to/chromium." >&2
    exit 1
  fi
}

# -- chromium
if [ ! -x "$CHROMIUM" ]; then
  command -v apt-get >/dev/null || { echo "install_browser: $CHROMIUM is missing and there is no apt-get; install Chromium and set CHROMIUM=/path/to/it" >&2; exit 1; }
  candidate=$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then  # package lists missing or stale
    as_root apt-get update -q
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
  [ -x "$CHROMIUM" ] || { echo "install_browser: chromium installed but $CHROMIUM is still missing; set CHROMIUM" >&2; exit 1; }
fi

# -- node + playwright-core
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install_browser: node and npm are needed (node >= 20); install them (e.g. apt-get install nodejs npm)" >&2
  exit 1
fi
node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' || {
  echo "install_browser: node $(node --version) is too old; playwright-core needs node >= 20" >&2; exit 1; }
in_sync() {  # node_modules holds exactly the playwright-core version package-lock.json pins
  (cd tests/browser && node -e '
    const want = require("./package-lock.json").packages["node_modules/playwright-core"].version;
    let have = null; try { have = require("./node_modules/playwright-core/package.json").version; } catch (e) {}
    process.exit(have === want ? 0 : 1);')
}
if ! in_sync; then
  (cd tests/browser && npm ci --no-audit --no-fund)
  in_sync || { echo "install_browser: npm ci did not install the pinned playwright-core" >&2; exit 1; }
fi
echo "install_browser: $("$CHROMIUM" --version 2>/dev/null | head -1), playwright-core $(cd tests/browser && node -p 'require("playwright-core/package.json").version')"
