#!/bin/sh
# A throwaway PyKMIP KMS (Debian python3-pykmip 0.10) for tests.
#
#   tests/kmip/server.sh start DIR PORT CERT KEY CA
#   tests/kmip/server.sh stop DIR
#
# start writes DIR/server.conf, starts pykmip-server in a session of its
# own (TLS 1.2, client certificates required, SQLite in DIR/pykmip.db,
# log in DIR/server.log), waits until it listens and records its process
# group in DIR/server.pgid.  stop SIGKILLs that group (PyKMIP ignores
# SIGTERM for a long time).  CERT must carry SAN IP:127.0.0.1; client
# certificates need extendedKeyUsage clientAuth, and PyKMIP takes the
# client's identity from their CN: objects belong to the CN that made them.
set -eu

# pykmip-server is a /usr/bin/python3 script: PATH's python3 may not
# see Debian's Python packages.
PYKMIP_SERVER=${PYKMIP_SERVER:-/usr/bin/pykmip-server}
START_TIMEOUT=${KMIP_START_TIMEOUT:-60}

usage() {
	echo "usage: $0 start DIR PORT CERT KEY CA | stop DIR" >&2
	exit 2
}

stop() {
	dir=$1
	[ -f "$dir/server.pgid" ] || return 0
	pgid=$(cat "$dir/server.pgid")
	# dash's kill wants -s SIGNAL before "--"
	kill -s KILL -- "-$pgid" 2>/dev/null || true
	i=0
	while kill -s 0 -- "-$pgid" 2>/dev/null && [ "$i" -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	rm -f "$dir/server.pgid"
}

start() {
	dir=$1 port=$2 cert=$3 key=$4 ca=$5
	[ -x "$PYKMIP_SERVER" ] || {
		echo "$0: $PYKMIP_SERVER missing (apt-get install python3-pykmip)" >&2
		exit 1
	}
	mkdir -p "$dir"
	rm -f "$dir/pykmip.db" "$dir/server.log"
	cat >"$dir/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$cert
key_path=$key
ca_path=$ca
auth_suite=TLS1.2
enable_tls_client_auth=True
logging_level=DEBUG
database_path=$dir/pykmip.db
EOF
	# setsid execs pykmip-server in place: $! is the group leader.
	setsid "$PYKMIP_SERVER" -f "$dir/server.conf" -l "$dir/server.log" \
	    </dev/null >"$dir/server.out" 2>&1 &
	echo $! >"$dir/server.pgid"

	i=0
	while ! grep -q "Starting connection service" "$dir/server.log" \
	    2>/dev/null; do
		if ! kill -0 "$(cat "$dir/server.pgid")" 2>/dev/null; then
			echo "$0: pykmip-server exited:" >&2
			tail -n 20 "$dir/server.out" "$dir/server.log" >&2 2>/dev/null || true
			rm -f "$dir/server.pgid"
			exit 1
		fi
		i=$((i + 1))
		if [ "$i" -gt $((START_TIMEOUT * 10)) ]; then
			echo "$0: pykmip-server not ready after ${START_TIMEOUT}s" >&2
			stop "$dir"
			exit 1
		fi
		sleep 0.1
	done
}

[ $# -ge 2 ] || usage
case $1 in
start)	[ $# -eq 6 ] || usage; start "$2" "$3" "$4" "$5" "$6" ;;
stop)	[ $# -eq 2 ] || usage; stop "$2" ;;
*)	usage ;;
esac
