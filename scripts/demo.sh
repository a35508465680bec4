#!/usr/bin/env bash
# The README's first command: ./scripts/demo.sh
#
# Sets up .venv with maskfarm, finds the model (MASKFARM_MODEL, which must be loadable; or,
# unset, the real CIDAS/clipseg-rd64-refined when its weights can be had, else a synthetic
# stand-in, said plainly), starts the service with `maskfarm up` (the Redis at
# MASKFARM_REDIS_URL, or the local one, or a private redis-server when none answers; the
# gRPC server; one worker), segments the example frames with the example prompts through
# it into ./masks/<prompt>/<frame>.png (replacing any earlier run's masks), and stops the
# service.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
log() { echo "demo.sh: $*" >&2; }
source "$repo_root/scripts/venv.sh"
ensure_venv all

model="${MASKFARM_MODEL:-CIDAS/clipseg-rd64-refined}"
made_by="$model"
if ! maskfarm model check "$model"; then
    if [[ -n "${MASKFARM_MODEL:-}" ]]; then
        log "MASKFARM_MODEL=$MASKFARM_MODEL cannot be loaded (see above): fix it, or unset it for the default."
        exit 1
    fi
    log "the weights of $model cannot be downloaded here; continuing with a SYNTHETIC model."
    log "Its masks are MEANINGLESS (random weights): they show the pipeline works, nothing more."
    log "Point MASKFARM_MODEL at a local copy of $model for real masks."
    model="$repo_root/.models/tiny"
    made_by="the SYNTHETIC stand-in $model (meaningless masks)"
    [[ -f "$model/config.json" ]] || maskfarm model synthetic --preset tiny "$model"
fi

prompts=()
while IFS= read -r prompt; do
    [[ -n "$prompt" ]] && prompts+=(--prompt "$prompt")
done <examples/prompts.txt

listen="${MASKFARM_LISTEN:-127.0.0.1:50051}"
up_output="$(mktemp)"
maskfarm up --model "$model" --workers 1 --listen "$listen" >"$up_output" &
up_pid=$!
trap 'kill -TERM "$up_pid" 2>/dev/null; wait "$up_pid" 2>/dev/null || true; rm -f "$up_output"' EXIT
log "starting the service on $listen"
until grep -q "ready" "$up_output"; do  # its workers are loaded (a health check could answer another server)
    kill -0 "$up_pid" 2>/dev/null || { log "maskfarm up stopped; see its messages above"; exit 1; }
    sleep 1
done
cat "$up_output" >&2

# --overwrite: the masks are always this run's, made by $model (a rerun with another model
# replaces them, instead of skipping frames whose masks exist).
maskfarm segment examples/frames/* "${prompts[@]}" --union --overwrite --target "$listen" --output masks
log "masks written by $made_by under $repo_root/masks/ (one folder per prompt, union/ for their union)"
