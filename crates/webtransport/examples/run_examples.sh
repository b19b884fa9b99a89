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
"$bin/echo_server" --once >"$out" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$out"' EXIT

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

# The server must notice the close and exit by itself (well before its 10 s idle timeout).
i=0
while kill -0 "$server" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 50 ]; then
        echo "echo_server still running 5 s after the client closed its session:" >&2
        cat "$out" >&2
        exit 1
    fi
    sleep 0.1
done
wait "$server"
cat "$out"
echo "examples: ok"
