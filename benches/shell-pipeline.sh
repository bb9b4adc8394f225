#!/bin/sh
# shell-pipeline.sh: the documented "curl + openssl + awk + jq" way of getting an IBM Cloud VPC
# instance identity certificate, as a baseline for examples/bench.rs.
#
# It mirrors the steps in "Instance identity operations" (docs/vpc imd-identity-operations;
# a copy is in /work/shared/api/identity-operations.md) one for one:
#   1. PUT  /identity/v1/token?version=2025-08-26  with Metadata-Flavor: ibm, expires_in 3600,
#      access_token picked out with jq
#   2. openssl req -sha256 -newkey rsa:4096 -subj '/C=US' ... -nodes   (new key + CSR)
#   3. awk 'NF {sub(/\r/, ""); printf "%s\\n",$0;}'                    (CSR as a JSON string)
#   4. POST /identity/v1/certificates?version=2025-08-26  with Authorization: Bearer <token>
#   5. jq to write the returned certificates to files
# The only additions: curl -sS -f (no progress meter; an HTTP error fails the run instead of
# being parsed as an answer), set -eu, and a check that each tool is installed.
#
# usage: shell-pipeline.sh BASE_URL OUTPUT_DIR
#   BASE_URL    e.g. http://127.0.0.1:8080 (what `eit-certd emulator` prints) or
#               http://api.metadata.cloud.ibm.com
#   OUTPUT_DIR  created if missing; receives key, csr, response.json, cert.pem, chain.pem,
#               fullchain.pem
# environment: RSA_BITS (default 4096, as documented; the benchmark's quick mode passes 2048),
#              API_VERSION (default 2025-08-26)
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 BASE_URL OUTPUT_DIR" >&2
    exit 2
fi
url=${1%/}
out=$2
bits=${RSA_BITS:-4096}
version=${API_VERSION:-2025-08-26}

for tool in curl jq openssl awk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: $tool is missing; install it (e.g. apt-get install $tool)" >&2
        exit 127
    fi
done

mkdir -p "$out"
cd "$out"

# 1. Instance identity access token.
identity_token=$(curl -sS -f -X PUT "$url/identity/v1/token?version=$version" \
    -H "Metadata-Flavor: ibm" \
    -d '{"expires_in": 3600}' | jq -r '(.access_token)')
if [ -z "$identity_token" ] || [ "$identity_token" = null ]; then
    echo "$0: the token response held no access_token" >&2
    exit 1
fi

# 2. Key pair and CSR.
openssl req -sha256 -newkey "rsa:$bits" -subj '/C=US' -out csr -keyout key -nodes \
    2>/dev/null

# 3. The CSR as one line with literal \n, ready to paste into JSON.
csr=$(awk 'NF {sub(/\r/, ""); printf "%s\\n",$0;}' csr)

# 4. The certificate.
curl -sS -f -X POST "$url/identity/v1/certificates?version=$version" \
    -H "Authorization: Bearer $identity_token" \
    -d "{ \"csr\": \"$csr\"}" >response.json

# 5. Leaf, intermediates, and both together.
jq -j '.certificates[0]' response.json >cert.pem
jq -j '.certificates[1:][]' response.json >chain.pem
jq -j '.certificates[]' response.json >fullchain.pem
