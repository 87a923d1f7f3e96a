# Shared by the bench scripts (sourced).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# N distinct free ports, one per line (held open together while chosen).
free_ports() {
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# Waits for the ingress on port $1 (PID $2) to be ready; fails when it
# exits or takes over 60 s.
wait_ready() {
  local i
  for i in $(seq 600); do
    curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "process $2 (port $1) exited before it was ready" >&2; return 1; }
    sleep 0.1
  done
  echo "process $2 (port $1) not ready after 60 s" >&2
  return 1
}

# Stops the given PIDs (ours): SIGTERM, then SIGKILL after 15 s.
stop_pids() {
  local p i
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for i in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}

# Entries a consumer group has not finished over the shard streams: its lag
# (not yet read) plus its pending (read, not acknowledged). XINFO GROUPS, Redis 7.
#   group_backlog <redis port> <group> <shards>
group_backlog() {
  local total=0 s v
  for s in $(seq 0 $(($3 - 1))); do
    v=$(redis-cli -p "$1" --no-raw XINFO GROUPS "chat:fanout:{$s}" 2>/dev/null |
      awk -v g="\"$2\"" '$NF == g {mine = 1} /"name"/ && $NF != g {mine = 0} mine && /"lag"|"pending"/ {getline; t += $NF} END {print t + 0}')
    total=$((total + v))
  done
  echo "$total"
}

# Starts nx-27017 (MongoDB's wire protocol over SQLite) on a free port with
# its data in $1; sets MPORT, MPID and CHAT_MONGODB_URL.
start_mongo() {
  scripts/ensure-mongo
  local nx
  nx=$(command -v nx-27017 || echo "$HOME/.cache/chat-nx-27017/bin/nx-27017")
  MPORT=$(free_port)
  "$nx" --db "$1/archive.db" --host 127.0.0.1 -p "$MPORT" --log-file "$1/nx.log" --pid-file "$1/nx.pid" > /dev/null 2>&1 &
  MPID=$!
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $MPORT))" 2>/dev/null; do sleep 0.1; done
  export CHAT_MONGODB_URL="mongodb://127.0.0.1:$MPORT/?directConnection=true"
}
