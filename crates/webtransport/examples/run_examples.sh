#!/bin/sh
# Runs the echo_server and client examples against each other, the way CI does:
# the server serves one session (--once) and must exit 0 after the client closed it,
# and the client must exit 0 (its echo matched).
#
#   sh crates/webtransport/examples/run_examples.sh
set -eu
cd "$(dirname "$0")/../../.."
cargo build --locked -p webtransport --examples
bin="${CARGO_TARGET_DIR:-target}/debug/examples"

out=$(mktemp)
# `timeout` bounds the server's life, so a failure below never leaves it running (and
# nothing here signals a process itself: see ../shared/docs/browser-testing.md).
timeout 30 "$bin/echo_server" --once >"$out" &
server=$!
trap 'rm -f "$out"' EXIT

# Wait (up to 10 s) for the line with the hash: the server is listening then.
i=0
until grep -q '^cert_sha256 ' "$out"; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        echo "echo_server did not start:" >&2
        cat "$out" >&2
        exit 1
    fi
    sleep 0.1
done
port=$(awk '/^port /{print $2}' "$out")
hash=$(awk '/^cert_sha256 /{print $2}' "$out")

"$bin/client" "https://127.0.0.1:$port/" "$hash"

# The server must notice the close and exit by itself, well before its 10 s idle timeout.
start=$(date +%s)
status=0
wait "$server" || status=$?
took=$(( $(date +%s) - start ))
if [ "$status" -ne 0 ] || [ "$took" -gt 5 ]; then
    echo "echo_server exited with status $status, $took s after the client closed its session:" >&2
    cat "$out" >&2
    exit 1
fi
cat "$out"
echo "examples: ok"
