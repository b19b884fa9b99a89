#!/usr/bin/env bash
# Sets up the Python peers of tests/python.rs (interop/run calls every setup-*.sh):
#
#   .venv-pwt081   CPython 3.11: pywebtransport 0.8.1 (the seed's version) and aioquic 1.7.2
#                  (pywebtransport 0.8.1 is built on aioquic and accepts 1.7.2)
#   .venv-pwt-new  CPython >= 3.12: the newest pywebtransport (its wheels need 3.12; on 3.11
#                  pip would silently pick 0.8.1, hence the pin and the version check)
#
# and builds the `wt` binary the cells run (`wt serve`, `wt connect`). Idempotent: an
# environment whose installed versions match the pins is left alone, so a second run takes
# about a second. A peer that cannot be installed fails the run loudly.
set -euo pipefail
cd "$(dirname "$0")"

PWT081=0.8.1
AIOQUIC=1.7.2
PWT_NEW=0.21.1

die() {
    echo "setup-python: $*" >&2
    exit 1
}

# The first interpreter of the wanted minor version(s): pyenv builds first (this kind of
# machine ships them; their shims only answer for the active version), then PATH.
find_python() {
    local minors=("$@") root="" m p
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root)"
    elif [ -d "$HOME/.pyenv" ]; then
        root="$HOME/.pyenv"
    fi
    for m in "${minors[@]}"; do
        if [ -n "$root" ]; then
            for p in $(ls -d "$root"/versions/"$m".*/bin/python 2>/dev/null | sort -rV); do
                if "$p" -c 'import venv' >/dev/null 2>&1; then
                    echo "$p"
                    return 0
                fi
            done
        fi
        p="$(command -v "python$m" 2>/dev/null || true)"
        if [ -n "$p" ] && "$p" -c 'import venv' >/dev/null 2>&1; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Prints the installed version of a distribution in a venv, or nothing.
installed() {
    "$1/bin/python" - "$2" 2>/dev/null <<'EOF' || true
import importlib.metadata, sys
try:
    print(importlib.metadata.version(sys.argv[1]))
except importlib.metadata.PackageNotFoundError:
    pass
EOF
}

# ensure_venv DIR PYTHON DIST==VERSION...
ensure_venv() {
    local dir="$1" py="$2" spec dist want ok=1
    shift 2
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
        for spec in "$@"; do
            dist="${spec%%==*}"
            want="${spec##*==}"
            [ "$(installed "$dir" "$dist")" = "$want" ] || ok=0
        done
        if [ "$ok" = 1 ]; then
            echo "== $dir: $* (already set up)"
            return 0
        fi
    else
        rm -rf "$dir"
        echo "== $dir: creating with $("$py" --version 2>&1) ($py)"
        "$py" -m venv "$dir" || die "cannot create $dir with $py"
    fi
    echo "== $dir: installing $*"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
        || die "pip could not install $* into $dir"
    for spec in "$@"; do
        dist="${spec%%==*}"
        want="${spec##*==}"
        [ "$(installed "$dir" "$dist")" = "$want" ] \
            || die "$dir has $dist $(installed "$dir" "$dist"), want $want"
    done
}

PY311="$(find_python 3.11)" || die "no CPython 3.11 found (pyenv or python3.11 on PATH)"
PY312="$(find_python 3.12 3.13 3.14)" || die "no CPython >= 3.12 found: pywebtransport $PWT_NEW needs it"

ensure_venv .venv-pwt081 "$PY311" "pywebtransport==$PWT081" "aioquic==$AIOQUIC"
ensure_venv .venv-pwt-new "$PY312" "pywebtransport==$PWT_NEW"

echo "== building wt (the cells run wt serve and wt connect)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../target}"
cargo build --locked --quiet --manifest-path ../Cargo.toml -p webtransport-cli --bin wt \
    || die "cannot build the wt binary"
