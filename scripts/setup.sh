#!/usr/bin/env bash
# Set up everything cnnkit needs, idempotently: a .venv with pinned dependencies,
# cnnkit installed in it, and the Fashion-MNIST files.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.cnnkit-setup
want=$(cat pyproject.toml constraints.txt | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing pinned dependencies (torch takes about a minute)"
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -c "import cnnkit, torch, torchvision" \
        || { echo "setup: install failed; see the pip messages above" >&2; exit 1; }
    echo "$want" >"$stamp"
fi

# Fashion-MNIST: Debian's package where apt is available, else the public download.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian's dataset-fashion-mnist"
        apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
            || echo "setup: apt could not install dataset-fashion-mnist; downloading instead"
    fi
fi
.venv/bin/cnnkit data fetch fashion-mnist --quiet

# The web page's tests drive Debian's chromium through Playwright (whose own browser
# download is not used); without root or apt, install chromium by other means.
if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian's chromium for the browser tests"
        apt-get install -y -q chromium >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
            || echo "setup: apt could not install chromium; the browser tests will fail" >&2
    else
        echo "setup: /usr/bin/chromium is missing; install it (e.g. apt-get install chromium) for the browser tests" >&2
    fi
fi
