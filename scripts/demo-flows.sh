#!/usr/bin/env bash
# Walks through the three activation flows with the real binaries and prints every command and its output.
# The README's "Activation flows" section is this script's output. Usage: scripts/demo-flows.sh [target/debug]
set -euo pipefail
BIN=${1:-target/debug}
WORK=$(mktemp -d)
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(( 20000 + RANDOM % 20000 ))
URL=http://127.0.0.1:$PORT

run() { echo "\$ $*" | sed "s#$WORK#/tmp/demo#g; s#$BIN/##g"; "$@" 2>&1 | sed "s#$WORK#/tmp/demo#g"; echo; }
api() { curl -sf -H "authorization: Bearer $1" -H 'content-type: application/json' "$URL$2" -d "$3"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

"$BIN/tessera-server" serve --data-dir "$WORK/server" --listen 127.0.0.1:$PORT > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
ADMIN=$(cat "$WORK/server/admin-token")

# Vendor set-up through the admin API.
TENANT=$(api "$ADMIN" /v1/tenants '{"name":"Acme Software"}' | field "['id']")
TOKEN=$(api "$ADMIN" /v1/tokens "{\"name\":\"acme\",\"role\":\"tenant-admin\",\"tenant_id\":\"$TENANT\"}" | field "['token']")
PRODUCT=$(api "$TOKEN" /v1/products '{"name":"Acme Studio"}' | field "['id']")
TEMPLATE=$(api "$TOKEN" /v1/templates "{\"name\":\"Pro yearly\",\"product_id\":\"$PRODUCT\",\"license_type\":\"SUBSCRIPTION\",\"max_activations\":3,\"duration_days\":365,\"grace_days\":14,\"features\":[{\"id\":\"export_pdf\"},{\"id\":\"render_4k\",\"limit_value\":1000}],\"emergency\":{\"enabled\":true,\"validity_hours\":24,\"max_per_30_days\":3,\"scope\":\"ALL_FEATURES\"}}" | field "['id']")
LICENSE_JSON=$(api "$TOKEN" /v1/licenses "{\"template_id\":\"$TEMPLATE\"}")
LICENSE=$(echo "$LICENSE_JSON" | field "['id']")
KEY=$(echo "$LICENSE_JSON" | field "['license_key']")
"$BIN/tessera-server" keys export --data-dir "$WORK/server" > "$WORK/keyset.json"

export TESSERA_AGENT_KEYSET=$WORK/keyset.json TESSERA_PRODUCT_ID=$PRODUCT

echo "## 1. Online"
run "$BIN/tessera-agent" --state "$WORK/online.db" --server "$URL" activate --key "$KEY"
run "$BIN/tessera-agent" --state "$WORK/online.db" check export_pdf
run "$BIN/tessera-agent" --state "$WORK/online.db" check teleport || true

echo "## 2. Offline (air-gapped)"
run "$BIN/tessera-agent" --state "$WORK/airgap.db" request-code --key "$KEY" --out "$WORK/request.txt"
REQ=$(grep -o 'REQ1-[0-9A-Z-]*' "$WORK/request.txt" | head -1)
RESP_OUT=$("$BIN/tessera-server" offline respond --data-dir "$WORK/server" "$REQ" 2>&1)
run "$BIN/tessera-server" offline respond --data-dir "$WORK/server" "$REQ"
RSP=$(echo "$RESP_OUT" | grep -o 'RSP1-[0-9A-Z-]*' | head -1)
run "$BIN/tessera-agent" --state "$WORK/airgap.db" apply-code "$RSP"
run "$BIN/tessera-agent" --state "$WORK/airgap.db" check export_pdf

echo "## 3. Emergency"
run "$BIN/tessera-agent" --state "$WORK/emergency.db" request-code --key "$KEY" --out "$WORK/em-request.txt"
EM_REQ=$(grep -o 'REQ1-[0-9A-Z-]*' "$WORK/em-request.txt" | head -1)
EM_OUT=$("$BIN/tessera-server" emergency issue --data-dir "$WORK/server" --license "$LICENSE" --reason "customer's proxy blocks the license server" --request-code "$EM_REQ" 2>&1)
echo "\$ tessera-server emergency issue --license $LICENSE --reason \"customer's proxy blocks the license server\" --request-code $EM_REQ"
echo "$EM_OUT"; echo
EMG=$(echo "$EM_OUT" | grep -o 'EMG1-[0-9A-Z-]*' | head -1)
run "$BIN/tessera-agent" --state "$WORK/emergency.db" apply-code "$EMG"
run "$BIN/tessera-agent" --state "$WORK/emergency.db" check export_pdf
