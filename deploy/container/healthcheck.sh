#!/bin/bash
# The container's health check: the target's configuration (certificates
# and key included) still loads, and its listen port accepts a TCP
# connection on loopback.  Exit 0 healthy, 1 not.
#
#   transporter-healthcheck [CONFIG]     (default /etc/transporter/target.conf)
conf=${1:-/etc/transporter/target.conf}
bin=${TARGET_TRANSPORTER:-/usr/sbin/target-transporter}

if ! out=$("$bin" -n -f "$conf" 2>&1); then
	echo "unhealthy: $out" >&2
	exit 1
fi
# listen = HOST:PORT, [V6]:PORT or *:PORT; default port 7878
listen=$(sed -n 's/^[[:space:]]*listen[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/p' \
    "$conf" | tail -n 1)
case $listen in
\[*\]:*) host=${listen%]:*}; host=${host#[}; port=${listen##*]:} ;;
\[*\]) host=${listen#[}; host=${host%]}; port= ;;
*:*:*) host=$listen; port= ;;		# a bare IPv6 address
*:*) host=${listen%:*}; port=${listen##*:} ;;
*) host=$listen; port= ;;
esac
case $port in
'' | *[!0-9]*) port=7878 ;;
esac
case $host in
'' | '*' | 0.0.0.0) host=127.0.0.1 ;;
::) host=::1 ;;
esac
# bash's /dev/tcp: no extra tool in the image
if ! timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
	echo "unhealthy: nothing accepts connections on $host port $port" >&2
	exit 1
fi
exit 0
