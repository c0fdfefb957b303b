#!/usr/bin/env bash
# Starts `casegate dev` on a loopback port in a throwaway folder and checks it with Python
# grpcio (health and reflection). Usage: tests/interop/run.sh [path/to/casegate]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:-$root/target/debug/casegate}"
venv="$root/target/interop-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/interop/requirements.txt"
fi
data="$(mktemp -d)"
out="$data/stdout"
CASEGATE_METRICS__LISTEN=127.0.0.1:0 CASEGATE_WEB__LISTEN=127.0.0.1:0 "$bin" dev --data "$data/dev" --listen 127.0.0.1:0 >"$out" 2>"$data/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$out" | head -n 1)"
  [ -n "$addr" ] && break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "casegate dev did not start:" >&2
  cat "$data/stderr" >&2
  exit 1
fi
"$venv/bin/python" "$root/tests/interop/health_and_reflection.py" "$data/dev" "$addr" clinic
