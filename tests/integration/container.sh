#!/bin/bash
# The container image (deploy/container/Containerfile): built with podman
# from a local Debian base made with debootstrap, then checked from the
# outside, since `podman run` is refused on this kind of machine (crun
# cannot set the rlimits): the image's root file system is mounted and
# its binaries run in it with chroot, as the image's user, against a
# real source over loopback.
#
# Slow the first time (debootstrap about 30 s, the build about a minute);
# the base image localhost/debian-base:bookworm is kept and reused, and
# podman's layer cache keeps the package installs.  Without podman or
# debootstrap it installs them when run as root with CI=true, and skips
# otherwise.  CONTAINER_REBUILD_BASE=1 makes a new base.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
BASE=localhost/debian-base:bookworm
IMAGE=localhost/transporter:test
UID_IMAGE=7878

# --- tools -----------------------------------------------------------------

missing=
for tool in podman debootstrap; do
	command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ] && [ "$(id -u)" -eq 0 ] && [ "${CI:-}" = true ]; then
	echo "# installing:$missing"
	# shellcheck disable=SC2086
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q $missing; } >"$T/apt.log" 2>&1 ||
	    { diag "$T/apt.log"; bail "apt-get install$missing failed"; }
	missing=
	for tool in podman debootstrap; do
		command -v "$tool" >/dev/null || missing="$missing $tool"
	done
fi
if [ -n "$missing" ]; then
	skip "container image" "not installed:$missing (apt-get install$missing;" \
	    "this test installs them itself as root with CI=true)"
	finish
fi
if [ "$(id -u)" -ne 0 ]; then
	skip "container image" "needs root (podman mount and chroot)"
	finish
fi

# --- the base image ----------------------------------------------------------

t0=$(date +%s)
if [ "${CONTAINER_REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE"; then
	ok "base image $BASE is there (reused)"
else
	# debootstrap's default mirror; the caches go, apt-get update in the
	# Containerfile fetches fresh lists anyway.
	if ! timeout 300 debootstrap --variant=minbase bookworm "$T/rootfs" \
	    >"$T/debootstrap.log" 2>&1; then
		diag "$T/debootstrap.log"
		skip "container image" "debootstrap of bookworm failed (is the" \
		    "Debian archive reachable?)"
		finish
	fi
	rm -rf "$T"/rootfs/var/cache/apt/archives/*.deb \
	    "$T"/rootfs/var/lib/apt/lists/*
	if tar -C "$T/rootfs" -c . | podman import - "$BASE" >"$T/import.log" 2>&1
	then
		ok "base image $BASE made with debootstrap in $(($(date +%s) - t0)) s"
	else
		diag "$T/import.log"
		bail "podman import of the debootstrap tree failed"
	fi
	rm -rf "$T/rootfs"
fi

# --- the build ---------------------------------------------------------------

# A clean context: what the Containerfile copies, not build trees.
mkdir -p "$T/ctx"
cp -r "$TOP/Makefile" "$TOP/proto" "$TOP/common" "$TOP/source-transporter" \
    "$TOP/target-transporter" "$TOP/deploy" "$T/ctx/"
t1=$(date +%s)
run timeout 900 podman build --isolation=chroot --format docker \
    --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" \
    -f "$T/ctx/deploy/container/Containerfile" "$T/ctx"
if [ "$RC" -eq 0 ]; then
	ok "podman build --isolation=chroot (multi-stage) in $(($(date +%s) - t1)) s"
else
	not_ok "podman build --isolation=chroot (multi-stage)" "exit $RC"
	diag "$LAST"
	finish
fi
grep -A40 'runtime-packages$' "$LAST_OUT" | grep -E '^lib[a-z0-9.+-]+$' |
    tr '\n' ' ' | sed 's/^/# runtime packages: /; s/$/\n/'

# --- the image's configuration -------------------------------------------------

inspect() {
	podman inspect --type image "$IMAGE" --format "$1" 2>/dev/null
}
user=$(inspect '{{.Config.User}}')
volumes=$(inspect '{{json .Config.Volumes}}')
ports=$(inspect '{{json .Config.ExposedPorts}}')
health=$(inspect '{{json .HealthCheck}}')
entry=$(inspect '{{json .Config.Entrypoint}}')
if [ "$user" = transporter ]; then
	ok "the image runs as the non-root user transporter"
else
	not_ok "the image runs as the non-root user transporter" "User: '$user'"
fi
if [[ $volumes == *'"/var/lib/transporter"'* ]] && [[ $ports == *'7878/tcp'* ]]; then
	ok "the repository is a VOLUME, port 7878 is exposed"
else
	not_ok "the repository is a VOLUME, port 7878 is exposed" \
	    "Volumes $volumes, ExposedPorts $ports"
fi
if [[ $health == *transporter-healthcheck* ]]; then
	ok "the image has a HEALTHCHECK"
else
	not_ok "the image has a HEALTHCHECK" "HealthCheck: $health"
fi
if [[ $entry == *'/usr/sbin/target-transporter'*'-d'* ]]; then
	ok "the entry point is the target in the foreground"
else
	not_ok "the entry point is the target in the foreground" "Entrypoint: $entry"
fi

# --- inside the image's root file system -------------------------------------

CID=$(podman create --no-healthcheck "$IMAGE" 2>"$T/create.err") ||
    { diag "$T/create.err"; bail "podman create failed"; }
at_exit "podman rm -f $CID >/dev/null 2>&1"
M=$(podman mount "$CID") || bail "podman mount failed"
at_exit "podman umount $CID >/dev/null 2>&1"

# inimage CMD...: CMD in the image's root, as its user
inimage() {
	chroot --userspec=$UID_IMAGE:$UID_IMAGE "$M" "$@"
}

run inimage /usr/sbin/target-transporter -V
expect_grep "^target-transporter $("$BUILD/target-transporter" -V | cut -d' ' -f2)\$" \
    "$LAST" "target-transporter -V runs in the image, as transporter"
run inimage /usr/sbin/source-transporter -V
expect_grep '^source-transporter [0-9]' "$LAST" "source-transporter -V runs in the image"
run chroot "$M" ldd /usr/sbin/target-transporter /usr/sbin/source-transporter
if [ "$RC" -eq 0 ] && ! grep -q 'not found' "$LAST"; then
	ok "every shared library the binaries need is in the image"
else
	not_ok "every shared library the binaries need is in the image"
	grep 'not found' "$LAST" | diag
fi
if [ ! -e "$M/usr/bin/gcc" ] && [ ! -d "$M/usr/include/openssl" ] &&
    [ ! -e "$M/usr/bin/make" ]; then
	ok "the runtime stage holds no compiler and no headers"
else
	not_ok "the runtime stage holds no compiler and no headers"
fi
if [ "$(stat -c '%u %a' "$M/var/lib/transporter")" = "$UID_IMAGE 700" ]; then
	ok "/var/lib/transporter belongs to the image's user, mode 0700"
else
	not_ok "/var/lib/transporter belongs to the image's user, mode 0700" \
	    "$(stat -c '%u %a' "$M/var/lib/transporter")"
fi

# Certificates as an operator mounts them, a configuration for loopback
# (the chroot shares the host's network).
pki_init
install -d -m 0755 "$M/etc/transporter/pki"
for f in ca.crt target.crt target.key; do
	install -m 0644 "$PKI/$f" "$M/etc/transporter/pki/$f"
done
chown $UID_IMAGE:$UID_IMAGE "$M/etc/transporter/pki/target.key"
chmod 600 "$M/etc/transporter/pki/target.key"
TARGET_PORT=$(free_port) || bail "no free port"
cat >"$M/etc/transporter/target.conf" <<EOF
listen = 127.0.0.1:$TARGET_PORT
certificate = /etc/transporter/pki/target.crt
key = /etc/transporter/pki/target.key
ca = /etc/transporter/pki/ca.crt
repository = /var/lib/transporter/repository
[tenant acme]
identity = acme-source
EOF
run inimage /usr/sbin/target-transporter -n -f /etc/transporter/target.conf
expect_grep 'configuration OK' "$LAST" "target-transporter -n accepts a sample configuration in the image"
chmod 644 "$M/etc/transporter/pki/target.key"
expect_exit 2 "and refuses a key readable by others there (exit 2)" \
    inimage /usr/sbin/target-transporter -n -f /etc/transporter/target.conf
chmod 600 "$M/etc/transporter/pki/target.key"

# The image's target, as the image's user, against the host's source
# (chroot execs the daemon: $! is its pid).
chroot --userspec=$UID_IMAGE:$UID_IMAGE "$M" /usr/sbin/target-transporter -d \
    -f /etc/transporter/target.conf >>"$TARGET_LOG" 2>&1 &
TARGET_PID=$!
track "$TARGET_PID"
if wait_grep 'listening on' "$TARGET_LOG"; then
	ok "the image's target-transporter starts and listens"
else
	not_ok "the image's target-transporter starts and listens"
	diag "$TARGET_LOG"
	finish
fi
run inimage /usr/local/bin/transporter-healthcheck
if [ "$RC" -eq 0 ]; then
	ok "the health check passes while the target serves"
else
	not_ok "the health check passes while the target serves" "exit $RC"
	diag "$LAST"
fi

make_image "$T/disk.img" 9M+512 33
source_conf "$T/source.conf" acme
check "the host's source backs up to the image's target" \
    src backup --disk "$T/disk.img" --name vm1
# the image's own source, from inside, restores it
install -d -m 0755 "$M/etc/transporter/src"
for f in ca.crt acme.crt acme.key; do
	install -m 0644 "$PKI/$f" "$M/etc/transporter/src/$f"
done
chown $UID_IMAGE:$UID_IMAGE "$M/etc/transporter/src/acme.key"
chmod 600 "$M/etc/transporter/src/acme.key"
cat >"$M/etc/transporter/src/source.conf" <<EOF
target = 127.0.0.1:$TARGET_PORT
server_name = localhost
certificate = /etc/transporter/src/acme.crt
key = /etc/transporter/src/acme.key
ca = /etc/transporter/src/ca.crt
EOF
run inimage /usr/sbin/source-transporter -f /etc/transporter/src/source.conf \
    restore --name vm1 --output /var/lib/transporter/vm1.img
if [ "$RC" -eq 0 ] && files_identical "$T/disk.img" "$M/var/lib/transporter/vm1.img"; then
	ok "the image's source restores it byte-identical"
else
	not_ok "the image's source restores it byte-identical" "exit $RC"
	diag "$LAST"
fi
if [ "$(stat -c %u "$M/var/lib/transporter/repository/transporter-repo" 2>/dev/null)" = $UID_IMAGE ]; then
	ok "the repository is in the volume, owned by the image's user"
else
	not_ok "the repository is in the volume, owned by the image's user"
fi
target_stop
run inimage /usr/local/bin/transporter-healthcheck
if [ "$RC" -ne 0 ] && grep -q 'unhealthy' "$LAST"; then
	ok "the health check fails once the target is gone"
else
	not_ok "the health check fails once the target is gone" "exit $RC"
fi

# --- compose.yaml --------------------------------------------------------------

run "$PY" -c '
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
s = d["services"]
t, b = s["target"], s["backup"]
assert t["build"]["dockerfile"] == "deploy/container/Containerfile"
assert any(v.startswith("repository:/var/lib/transporter") for v in t["volumes"])
assert any(v.endswith(":/etc/transporter/pki:ro") for v in t["volumes"])
assert b["entrypoint"] == ["/usr/sbin/source-transporter"]
assert "backup" in b["command"] and b["restart"] == "no"
assert b["depends_on"]["target"]["condition"] == "service_healthy"
assert "repository" in d["volumes"]
' "$TOP/deploy/container/compose.yaml"
if [ "$RC" -eq 0 ]; then
	ok "compose.yaml: a target with its repository volume and a one-shot backup"
else
	not_ok "compose.yaml: a target with its repository volume and a one-shot backup"
	diag "$LAST"
fi
echo "# container.sh took $(($(date +%s) - t0)) s"

finish
