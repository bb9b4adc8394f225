#!/bin/sh
# Builds every fuzz target and runs each for a bounded time (default 60 s each), starting from
# the committed seeds. Exits non-zero if any target crashes, panics, hangs or fails to build;
# the reproducer is then in fuzz/artifacts/<target>/.
#   fuzz/run-short.sh [SECONDS]
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:-60}
targets="service_body config client"

case $seconds in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

cd "$here"
# -a: debug assertions and overflow checks, so arithmetic on hostile values fails loudly.
cargo +nightly fuzz build -a

failed=
for target in $targets; do
    mkdir -p "corpus/$target"
    echo "== $target: $seconds s" >&2
    # The first directory collects what this run finds (ignored by git); seeds/ is read only.
    if ! cargo +nightly fuzz run -a "$target" "corpus/$target" "seeds/$target" -- \
        -dict="dicts/$target.dict" -max_total_time="$seconds" -timeout=10 \
        -print_final_stats=1; then
        echo "== $target FAILED: see fuzz/artifacts/$target/" >&2
        failed="$failed $target"
    fi
done

if [ -n "$failed" ]; then
    echo "fuzz targets that failed:$failed" >&2
    exit 1
fi
echo "fuzz targets passed: $targets ($seconds s each)" >&2
