# Sourced by demo.sh and test.sh: `ensure_venv EXTRA` makes .venv (if missing), installs
# maskfarm[EXTRA] into it with the tested versions of constraints.txt (again only when
# pyproject.toml or constraints.txt changed) and puts it on PATH.
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
    pyproject_hash="$(cat "$repo_root/pyproject.toml" "$repo_root/constraints.txt" | sha256sum | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$pyproject_hash" ]]; then
        log "installing maskfarm[$extra] into $venv (the first time downloads torch, several GB)"
        "$venv/bin/python" -m pip install -c "$repo_root/constraints.txt" -e "$repo_root[$extra]"
        echo "$pyproject_hash" >"$stamp"
    fi
    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
}
