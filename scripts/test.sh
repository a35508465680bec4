#!/usr/bin/env bash
# The test command: ./scripts/test.sh [pytest arguments]
#
# Creates .venv if needed, installs maskfarm with its dev extra (again only when
# pyproject.toml changed), checks that redis-server exists (the tests start their own
# private Redis servers), then runs pytest and exits with pytest's exit code.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

log() { echo "test.sh: $*" >&2; }
source "$repo_root/scripts/venv.sh"

if ! command -v redis-server >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "redis-server not found; installing it with apt-get"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
    else
        log "redis-server not found. The tests start their own Redis servers, so it must be"
        log "installed: 'sudo apt-get install redis-server' (Debian/Ubuntu), 'brew install redis' (macOS)."
        exit 1
    fi
fi

ensure_venv dev
# Nothing may be downloaded: tests use the synthetic models maskfarm writes itself.
export HF_HUB_OFFLINE=1

exec python -m pytest "$@"
