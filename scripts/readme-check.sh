#!/usr/bin/env bash
# Pastes the README's grpcurl examples against a real `make run`, the way a
# newcomer would, with events relayed to a NATS server started by the
# README's own command, then the README's events example, which must show
# the examples' events. The mutual TLS examples run against a second
# `make run` started as the README starts it, with certificates from the
# README's devcerts command (written to certs/, as the README writes them).
# Where the README shows an example's JSON output, the example must print
# it, identity ids and times aside. Then it stops it all with Ctrl-C
# (SIGINT to each one's process group) and checks that each service
# drained and that it and its throwaway PostgreSQL are gone.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/bin:$PATH"
unset DATABASE_URL TEST_DATABASE_URL
command -v pgrep >/dev/null || { echo "readme-check: needs pgrep (Debian: procps)"; exit 1; }
command -v curl >/dev/null || { echo "readme-check: needs curl"; exit 1; }

make --no-print-directory tools build >/dev/null
work=$(mktemp -d)
log=$work/run.log
tlslog=$work/tls.log
natsdir=$work/nats
mkdir "$natsdir"
[ -e certs ] && hadcerts=1 || hadcerts=

# block PATTERN: the README's ```sh blocks whose text matches the awk
# regular expression PATTERN, in order.
block() {
  awk -v pat="$1" '/^```sh$/ {inblock=1; block=""; next}
                   /^```$/ && inblock {if (block ~ pat) printf "%s", block; inblock=0; next}
                   inblock {block = block $0 "\n"}' README.md
}

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
tlssid=
stop() {
  kill -INT -- "-$sid" 2>/dev/null || true
  [ -z "$tlssid" ] || kill -INT -- "-$tlssid" 2>/dev/null || true
  kill -TERM -- "-$natsid" 2>/dev/null || true
}
trap 'stop; cat "$log" "$tlslog" "$natsdir/log" 2>/dev/null' ERR

for _ in $(seq 1 120); do
  grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 0.5
done

# The mutual TLS server: the README's certificates, then its make run
# (started once the first one has built bin/, so that the two builds do
# not race), without the events, which the first one relays.
devcerts=$(block 'scripts/devcerts')
tlsrun=$(block 'GRPC_TLS_CLIENT_CA_FILE=.*make run')
[ -n "$devcerts" ] && [ -n "$tlsrun" ] ||
  { echo "readme-check: no devcerts command or mutual TLS make run found in README.md"; false; }
bash -euo pipefail -c "$devcerts"
setsid env -u NATS_URL bash -euo pipefail -c "$tlsrun" >"$tlslog" 2>&1 &
tlssid=$!
for _ in $(seq 1 120); do
  grep -q '"msg":"serving"' "$tlslog" && break
  sleep 0.5
done
grep -q '"msg":"serving"' "$tlslog" || { echo "readme-check: the mutual TLS make run is not serving"; false; }

# Every ```sh block of the README that calls grpcurl, in order, in one
# shell, each block's output kept in a file of its own too. A ```json
# (or ```text) block right after one (blank lines between at most) is its
# output as shown, kept beside it.
outdir=$work/out
mkdir "$outdir"
examples=$(awk -v dir="$outdir" '
  /^```sh$/ {inblock=1; block=""; next}
  /^```$/ && inblock {
    inblock=0; last=""
    if (block ~ /grpcurl/) {
      n++; last=dir "/" n
      printf "out=%s\n{\n%s} >\"$out\" 2>&1\ncat \"$out\"\n", last, block
    }
    next
  }
  inblock {block = block $0 "\n"; next}
  /^```json$/ && last != "" {injson=1; shown=last ".shown"; printf "" >shown; next}
  /^```text$/ && last != "" {injson=1; shown=last ".text"; printf "" >shown; next}
  /^```$/ && injson {injson=0; close(shown); last=""; next}
  injson {print >shown; next}
  /^[ \t]*$/ {next}
  {last=""}' README.md)
[ -n "$examples" ] || { echo "readme-check: no grpcurl examples found in README.md"; exit 1; }
echo "readme-check: running the README's grpcurl examples"
bash -euo pipefail -c "trap '[ \$? -eq 0 ] || cat \"\$out\"' EXIT
$examples"

# The outputs the README shows are what the examples printed: the same
# JSON, but for identity ids and times (any UUID matches any UUID, any
# RFC 3339 time any time). Among them, a first login's "created": true and
# a returning one's "created": false.
python3 - "$outdir" <<'PY'
import glob, json, re, sys

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

def docs(text):
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        doc, i = dec.raw_decode(text, i)
        out.append(doc)

def varies(shown, got):
    return isinstance(shown, str) and isinstance(got, str) and any(
        p.match(shown) and p.match(got) for p in (UUID, TIME))

def same(shown, got):
    if isinstance(shown, dict) and isinstance(got, dict):
        return shown.keys() == got.keys() and all(same(shown[k], got[k]) for k in shown)
    if isinstance(shown, list) and isinstance(got, list):
        return len(shown) == len(got) and all(map(same, shown, got))
    return shown == got or varies(shown, got)

created, failed = set(), False
for shown_file in sorted(glob.glob(sys.argv[1] + "/*.shown")):
    got_file = shown_file[: -len(".shown")]
    shown, got = open(shown_file).read(), open(got_file).read()
    try:
        ok = same(docs(shown), docs(got))
    except ValueError as e:
        ok = False
        print(f"readme-check: not JSON: {e}")
    if not ok:
        failed = True
        print(f"readme-check: the README shows\n{shown}\nbut the example printed\n{got}")
        continue
    for doc in docs(shown):
        if isinstance(doc, dict) and "created" in doc:
            created.add(doc["created"])

# A text output shown: its lines come in the example's output in that
# order, identity ids, times and spacing aside (Go's protojson varies its
# spaces from build to build on purpose, so that no one compares bytes).
def plain(line):
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", line)
    line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "TIME", line)
    return " ".join(line.split())

for shown_file in sorted(glob.glob(sys.argv[1] + "/*.text")):
    got = [plain(l) for l in open(shown_file[: -len(".text")]).read().splitlines()]
    at = 0
    for line in open(shown_file).read().splitlines():
        try:
            at = got.index(plain(line), at) + 1
        except ValueError:
            failed = True
            print(f"readme-check: the README shows {line!r}, which the example did not print (in that order):\n" + "\n".join(got))
            break

if created != {True, False}:
    failed = True
    print('readme-check: the README shows no first login\'s "created": true and returning login\'s "created": false')
sys.exit(1 if failed else 0)
PY
echo "readme-check: the outputs the README shows are the examples' own"

# The events example: every kind of event the grpcurl examples made.
events=$(block 'scripts/events')
[ -n "$events" ] || { echo "readme-check: no scripts/events example found in README.md"; exit 1; }
echo "readme-check: running the README's events example"
printed=$(bash -euo pipefail -c "$events")
for subject in user.created user.updated user.deleted api_token.created api_token.revoked; do
  if ! grep -q "\"subject\":\"agyn.users.$subject\"" <<<"$printed"; then
    echo "$printed"; echo "readme-check: the events example printed no agyn.users.$subject"; false
  fi
done
echo "readme-check: $(wc -l <<<"$printed") events printed"

# stopped NAME SESSION LOG: the make run of SESSION, which logs to LOG, was
# interrupted: it drained, and it and its throwaway PostgreSQL are gone.
stopped() {
  local name=$1 session=$2 log=$3 where
  where=$(sed -n 's/^withpg: throwaway PostgreSQL (local, \(.*\)) at .*/\1/p' "$log")
  wait "$session" || true # make reports the interrupt in its own exit code
  if ! grep -q '"msg":"drained"' "$log"; then
    cat "$log"; echo "readme-check: the $name did not shut down gracefully on Ctrl-C"; exit 1
  fi
  # withpg removes the server after the service has exited: give it a moment.
  for _ in $(seq 1 60); do
    pgrep -s "$session" >/dev/null || break
    sleep 0.5
  done
  if pgrep -a -s "$session"; then
    echo "readme-check: the $name left the processes above running after Ctrl-C"; exit 1
  fi
  if [ -n "$where" ] && [ -e "$where" ]; then
    echo "readme-check: the $name's throwaway PostgreSQL left $where behind"; exit 1
  fi
}

echo "readme-check: stopping both make runs"
stop
trap - ERR
stopped "make run" "$sid" "$log"
stopped "mutual TLS make run" "$tlssid" "$tlslog"
wait "$natsid" || true
rm -rf "$work"
[ -n "$hadcerts" ] || rm -rf certs
echo "readme-check: README examples work; both make runs drained and left nothing running"
