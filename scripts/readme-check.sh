#!/usr/bin/env bash
# Pastes the README's grpcurl examples against a real `make run`, the way a
# newcomer would, with events relayed to a NATS server started by the
# README's own command, then the README's events example, which must show
# the examples' events; then stops it all with Ctrl-C (SIGINT to its
# process group) and checks that the service drained and that it and its
# throwaway PostgreSQL are gone.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/bin:$PATH"
unset DATABASE_URL TEST_DATABASE_URL
command -v pgrep >/dev/null || { echo "readme-check: needs pgrep (Debian: procps)"; exit 1; }
command -v curl >/dev/null || { echo "readme-check: needs curl"; exit 1; }

make --no-print-directory tools build >/dev/null
log=$(mktemp)
natsdir=$(mktemp -d)

# NATS as the README starts it, on a port of its own rather than 4222,
# which a NATS server of the machine's may hold.
natscmd=$(grep -m1 '^go run github.com/nats-io/nats-server/v2 ' README.md | sed 's/ *#.*//')
[ -n "$natscmd" ] || { echo "readme-check: no NATS server command found in README.md"; exit 1; }
natsport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export NATS_URL="nats://127.0.0.1:$natsport"
setsid bash -c "exec ${natscmd/-p 4222/-p $natsport} -sd $natsdir" >"$natsdir/log" 2>&1 &
natsid=$!

# A session of its own: every process make run starts, the service and
# PostgreSQL included, stays in it, so the checks below look at those only.
setsid env CLUSTER_ADMIN_SUBJECTS='auth0|alice' make --no-print-directory run >"$log" 2>&1 &
sid=$!
stop() { kill -INT -- "-$sid" 2>/dev/null || true; kill -TERM -- "-$natsid" 2>/dev/null || true; }
trap 'stop; cat "$log" "$natsdir/log"' ERR

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

# The events example: every kind of event the grpcurl examples made.
events=$(awk '/^```sh$/ {inblock=1; block=""; next}
              /^```$/ && inblock {if (block ~ /scripts\/events/) printf "%s", block; inblock=0; next}
              inblock {block = block $0 "\n"}' README.md)
[ -n "$events" ] || { echo "readme-check: no scripts/events example found in README.md"; exit 1; }
echo "readme-check: running the README's events example"
printed=$(bash -euo pipefail -c "$events")
for subject in user.created user.updated user.deleted api_token.created api_token.revoked; do
  if ! grep -q "\"subject\":\"agyn.users.$subject\"" <<<"$printed"; then
    echo "$printed"; echo "readme-check: the events example printed no agyn.users.$subject"; false
  fi
done
echo "readme-check: $(wc -l <<<"$printed") events printed"

where=$(sed -n 's/^withpg: throwaway PostgreSQL (local, \(.*\)) at .*/\1/p' "$log")
echo "readme-check: stopping make run (PostgreSQL in ${where:-a container})"
stop
trap - ERR
wait "$sid" || true # make reports the interrupt in its own exit code
if ! grep -q '"msg":"drained"' "$log"; then
  cat "$log"; echo "readme-check: the service did not shut down gracefully on Ctrl-C"; exit 1
fi
# withpg removes the server after the service has exited: give it a moment.
for _ in $(seq 1 60); do
  pgrep -s "$sid" >/dev/null || break
  sleep 0.5
done
if pgrep -a -s "$sid"; then
  echo "readme-check: make run left the processes above running after Ctrl-C"; exit 1
fi
if [ -n "$where" ] && [ -e "$where" ]; then
  echo "readme-check: the throwaway PostgreSQL left $where behind"; exit 1
fi
kill -TERM -- "-$natsid" 2>/dev/null || true
wait "$natsid" || true
rm -rf "$natsdir"
echo "readme-check: README examples work; make run drained and left nothing running"
