#!/usr/bin/env bash
# Pastes the README's grpcurl examples against a real `make run`, the way a
# newcomer would, then stops it with Ctrl-C (SIGINT to its process group)
# and checks that the throwaway PostgreSQL is gone too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/bin:$PATH"
unset DATABASE_URL TEST_DATABASE_URL

make --no-print-directory tools build >/dev/null
shopt -s nullglob
pgdirs() { local d=("${TMPDIR:-/tmp}"/users-pgtest-*); echo "${#d[@]}"; }
dirs_before=$(pgdirs)
log=$(mktemp)
setsid make --no-print-directory run >"$log" 2>&1 &
pgid=$!
stop() { kill -INT -- "-$pgid" 2>/dev/null || true; }
trap 'stop; cat "$log"' ERR

for _ in $(seq 1 120); do
  grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 0.5
done

# Every ```sh block of the README that calls grpcurl, in order, in one shell.
examples=$(awk '/^```sh$/ {inblock=1; block=""; next}
                /^```$/ && inblock {if (block ~ /grpcurl/) printf "%s", block; inblock=0; next}
                inblock {block = block $0 "\n"}' README.md)
[ -n "$examples" ] || { echo "readme-check: no grpcurl examples found in README.md"; exit 1; }
echo "readme-check: running the README's grpcurl examples"
bash -euo pipefail -c "$examples"

stop
trap - ERR
wait "$pgid" || true # make reports the interrupt in its own exit code
if ! grep -q '"msg":"drained"' "$log"; then
  cat "$log"; echo "readme-check: the service did not shut down gracefully on Ctrl-C"; exit 1
fi
# withpg removes the server after the service has exited: give it a moment.
for _ in $(seq 1 60); do
  if ! pgrep -f 'users-pgtest-' >/dev/null && [ "$(pgdirs)" -le "$dirs_before" ]; then
    break
  fi
  sleep 0.5
done
if pgrep -af 'users-pgtest-'; then
  echo "readme-check: a throwaway PostgreSQL is still running after Ctrl-C"; exit 1
fi
if [ "$(pgdirs)" -gt "$dirs_before" ]; then
  echo "readme-check: a throwaway PostgreSQL left its directory behind"; exit 1
fi
if pgrep -x users >/dev/null; then
  echo "readme-check: users is still running after Ctrl-C"; exit 1
fi
echo "readme-check: README examples work; make run drained and left nothing running"
