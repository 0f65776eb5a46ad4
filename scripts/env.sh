# Sourced by kcore's scripts: one build cache per machine, reused across clones and runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kcore/target}"
