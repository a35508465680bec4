# Sourced by demo.sh and test.sh: `ensure_venv EXTRA` makes .venv (if missing), installs
# maskfarm[EXTRA] into it (again only when pyproject.toml changed) and puts it on PATH.
# Expects repo_root and a log function.

ensure_venv() {
    local extra="$1"
    local venv="$repo_root/.venv"
    local stamp="$venv/.maskfarm-$extra-install"
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating $venv"
        python3 -m venv "$venv"
    fi
    local pyproject_hash
    pyproject_hash="$(sha256sum "$repo_root/pyproject.toml" | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$pyproject_hash" ]]; then
        log "installing maskfarm[$extra] into $venv (the first time downloads torch, several GB)"
        "$venv/bin/python" -m pip install -e "$repo_root[$extra]"
        echo "$pyproject_hash" >"$stamp"
    fi
    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
}
