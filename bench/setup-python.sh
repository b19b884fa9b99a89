#!/usr/bin/env bash
# Virtual environments for peer-bench's Python implementations, when interop/setup-python.sh
# has not made its own (peer-bench looks in interop/ first, then here):
#   bench/.venv-pwt081   pywebtransport 0.8.1 on the default Python (3.11)
#   bench/.venv-pwt-new  pywebtransport 0.21.1 on Python 3.12 (its wheels need >= 3.12)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

if [ ! -x "$root/interop/.venv-pwt081/bin/python" ] && [ ! -x "$here/.venv-pwt081/bin/python" ]; then
    python3 -m venv "$here/.venv-pwt081"
    "$here/.venv-pwt081/bin/pip" install --quiet "pywebtransport==0.8.1"
fi

if [ ! -x "$root/interop/.venv-pwt-new/bin/python" ] && [ ! -x "$here/.venv-pwt-new/bin/python" ]; then
    py312=""
    for candidate in python3.12 "$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python"; do
        if command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ]; then
            py312="$candidate"
            break
        fi
    done
    if [ -z "$py312" ]; then
        echo "setup-python.sh: no Python 3.12 found; pywebtransport 0.21 needs it" >&2
        exit 1
    fi
    "$py312" -m venv "$here/.venv-pwt-new"
    "$here/.venv-pwt-new/bin/pip" install --quiet "pywebtransport==0.21.1"
fi
echo "setup-python.sh: ready"
