#!/usr/bin/env bash
# Long fuzzing runs: each named target (all of them by default) runs for SECONDS from its
# committed corpus in fuzz/corpus/<target>, then the corpus is minimised in place
# (`cargo fuzz cmin`) so that what is committed stays small. libFuzzer's output goes to
# fuzz/logs/<target>.log and its final line (executions, coverage, corpus) is printed.
#
#   fuzz/run-long.sh [-t SECONDS] [target ...]      # default: 3600 s, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets it use the stable
# compiler. Runs at the priority it is started with: `nice -n 19 fuzz/run-long.sh` leaves
# the machine to other work. Two instances with different targets may run side by side.
set -euo pipefail
cd "$(dirname "$0")"

seconds=3600
if [[ "${1:-}" == "-t" ]]; then
    seconds="$2"
    shift 2
fi
if [[ $# -eq 0 ]]; then
    mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
else
    targets=("$@")
fi

export RUSTC_BOOTSTRAP=1
mkdir -p logs
cargo fuzz build >logs/build.log 2>&1 || { cat logs/build.log >&2; exit 1; }
for target in "${targets[@]}"; do
    [[ -f "fuzz_targets/$target.rs" ]] || { echo "no fuzz target '$target'" >&2; exit 2; }
    mkdir -p "corpus/$target"
    log="logs/$target.log"
    echo "== $target: ${seconds} s from $(ls "corpus/$target" | wc -l) inputs ($(date -u +%FT%TZ))"
    cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || {
        echo "$target: libFuzzer exited with an error; see fuzz/$log and fuzz/artifacts/$target/" >&2
        exit 1
    }
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    cargo fuzz cmin "$target" "corpus/$target" >"logs/$target.cmin.log" 2>&1
    echo "   corpus after cmin: $(ls "corpus/$target" | wc -l) inputs, $(cat "corpus/$target"/* 2>/dev/null | wc -c) bytes"
done
