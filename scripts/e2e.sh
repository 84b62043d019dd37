#!/usr/bin/env bash
# Runs the deployed-service end-to-end tests (e2e/, build tag e2e).
#
#   USERS_ADDRESS=host:port scripts/e2e.sh   against a running service
#   scripts/e2e.sh                           against this tree, built and
#                                            served here on DATABASE_URL or
#                                            a throwaway PostgreSQL (CI)
#
# In a cluster, devspace.yaml runs the same tests as a Job instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${USERS_ADDRESS:-}" ]; then
  exec go test -tags e2e -count=1 ./e2e/
fi

make --no-print-directory build >/dev/null
# Ports of their own, so that a make run in another terminal does not clash.
export GRPC_ADDRESS=127.0.0.1:50061 ADMIN_ADDRESS=127.0.0.1:18061
export USERS_ADDRESS=$GRPC_ADDRESS

# The service runs the way the chart runs it: migrate first, then serve.
# It must also stop cleanly on SIGTERM, as in a rolling update.
serve_and_test='
  bin/users migrate up
  bin/users serve & pid=$!
  rc=0; go test -tags e2e -count=1 ./e2e/ || rc=$?
  kill -TERM "$pid"
  wait "$pid" || { echo "e2e: users serve exited with $? after SIGTERM"; exit 1; }
  exit "$rc"'
if [ -n "${DATABASE_URL:-}" ]; then
  bash -euo pipefail -c "$serve_and_test"
else
  bin/withpg -- bash -euo pipefail -c "$serve_and_test"
fi
