#!/bin/sh
# Writes the service_body seeds from a real emulator (loopback only), together with the
# fixtures they belong to: fixtures/our-key.pub.pem (the key in the seeds' CSR) and
# fixtures/anchor.pem (the emulator's root). Run from anywhere, after `cargo build`:
#   fuzz/make-seeds.sh [path/to/eit-certd]
# Rewrites seeds/service_body/emulator-*.json and both fixtures; the other seeds are kept.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/debug/eit-certd}
version=2025-08-26
seeds=$here/seeds/service_body
work=$(mktemp -d)
emulator_pid=

cleanup() {
    if [ -n "$emulator_pid" ]; then
        kill "$emulator_pid" 2>/dev/null || true
        wait "$emulator_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin" emulator --state-dir "$work" >"$work/stdout" 2>"$work/stderr" &
emulator_pid=$!
# The emulator prints its base URL as the first line once it listens.
tries=0
until [ -s "$work/stdout" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ] || ! kill -0 "$emulator_pid" 2>/dev/null; then
        echo "make-seeds: the emulator did not start:" >&2
        cat "$work/stderr" >&2
        exit 1
    fi
    sleep 0.1
done
url=$(head -n 1 "$work/stdout")

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/key.pem" 2>/dev/null
openssl req -new -key "$work/key.pem" -subj /C=US -out "$work/req.csr"
openssl pkey -in "$work/key.pem" -pubout -out "$here/fixtures/our-key.pub.pem"
cp "$work/ca.pem" "$here/fixtures/anchor.pem"
csr=$(awk 'NF {sub(/\r/, ""); printf "%s\\n", $0}' "$work/req.csr")
mkdir -p "$seeds"

token_body() {
    curl -sS -X PUT "$url/identity/v1/token?version=$version" \
        -H "Metadata-Flavor: ibm" -d '{"expires_in": 3600}'
}

# One certificate call answered under fault mode $1, its body saved whatever the status.
certificate_call() {
    token=$(token_body | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
    curl -sS -X PUT "$url/emulator/v1/fault" -d "{\"mode\": \"$1\", \"count\": 1}" >/dev/null
    curl -sS -X POST "$url/identity/v1/certificates?version=$version" \
        -H "Authorization: Bearer $token" \
        -d "{\"csr\": \"$csr\", \"expires_in\": 3600}" >"$seeds/emulator-$1.json"
}

token_body >"$seeds/emulator-token.json"
for mode in ok expired not-yet-valid bad-signature wrong-key short-lived no-intermediate \
    extra-garbage garbage-pem truncated wrong-order doc-sample refuse-csr status-503 html-500 \
    token-401; do
    certificate_call "$mode"
done
# An error body from the token call itself.
curl -sS -X PUT "$url/identity/v1/token?version=$version" -d '{}' >"$seeds/emulator-no-flavor.json"

# The client target reads byte 0 as the call (0 token, 1 certificate, 2 IAM token, 3 instance)
# and byte 1 as an index into its status list (0: 200, 1: 201, 5: 400, 6: 401, 11: 500,
# 13: 503); the body follows.
client=$here/seeds/client
mkdir -p "$client"
client_seed() { # NAME CALL STATUS_INDEX BODY_FILE
    { printf '%b' "\\0$(printf %03o "$2")\\0$(printf %03o "$3")"; cat "$4"; } >"$client/$1"
}
for mode in ok expired bad-signature wrong-key no-intermediate extra-garbage garbage-pem \
    truncated wrong-order; do
    client_seed "certificate-$mode" 1 1 "$seeds/emulator-$mode.json"
done
client_seed certificate-refuse-csr 1 5 "$seeds/emulator-refuse-csr.json"
client_seed certificate-token-401 1 6 "$seeds/emulator-token-401.json"
client_seed certificate-html-500 1 11 "$seeds/emulator-html-500.json"
client_seed certificate-status-503 1 13 "$seeds/emulator-status-503.json"
client_seed token 0 0 "$seeds/emulator-token.json"
client_seed token-no-flavor 0 5 "$seeds/emulator-no-flavor.json"
client_seed iam-token 2 0 "$seeds/emulator-token.json"
curl -sS "$url/metadata/v1/instance?version=$version" \
    -H "Authorization: Bearer $(token_body | sed 's/.*"access_token":"\([^"]*\)".*/\1/')" \
    >"$work/instance.json"
client_seed instance 3 0 "$work/instance.json"
ls -l "$seeds" "$client"
