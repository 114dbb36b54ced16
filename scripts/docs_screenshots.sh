#!/usr/bin/env bash
# Screenshots of the built documentation site (`make docs-check`): the home page and the API reference, rendered by
# headless Chromium (Debian's package: apt-get install chromium) from a local HTTP server over the built site.
#   bash scripts/docs_screenshots.sh SITE_DIR OUTPUT_DIR
set -euo pipefail
site="${1:-site}"
out="${2:-docs/images}"
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
    echo "docs_screenshots.sh: no chromium on PATH (Debian: apt-get install -y chromium)" >&2
    exit 127
fi
[[ -f "$site/index.html" ]] || { echo "docs_screenshots.sh: $site/index.html missing: run \`make docs\` first" >&2; exit 2; }
mkdir -p "$out"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null' EXIT
for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break; sleep 0.1; done
shoot() {  # URL path, PNG name
    profile=$(mktemp -d)
    timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
        --hide-scrollbars --window-size=1280,900 --screenshot="$out/$2" "http://127.0.0.1:$port/$1" >/dev/null 2>&1
    rm -rf "$profile"
    [[ -s "$out/$2" ]] || { echo "docs_screenshots.sh: chromium wrote no $out/$2" >&2; exit 1; }
    echo "$out/$2"
}
shoot "" docs-site-home.png
shoot "api/" docs-site-api.png
