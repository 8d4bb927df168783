#!/bin/bash
# Make a test disk image.
#
#   mkimage.sh OUT SIZE [SEED]     mixed blocks (see below)
#   mkimage.sh --fs OUT SIZE [SEED]  an ext4 image about half full of real files
#
# SIZE is bytes with an optional K, M or G suffix, and may be a sum:
# "64M", "1G+12345".  The same SEED (default 1) on the same machine gives
# the same image.
#
# A mixed image has, in regions of random length at unaligned offsets:
# holes (sparse zeros, some of them several MiB), text (/usr/share/doc,
# common-licenses), binaries (/usr/bin, /usr/lib), random bytes (an AES-CTR
# keystream of the seed), whole 1 MiB blocks copied from earlier ones
# (duplicates), one block that is zero but for one byte, and data up to the
# last byte.
set -eu

usage() {
	echo "usage: $0 [--fs] OUT SIZE [SEED]" >&2
	exit 2
}

# bytes SIZE: print SIZE in bytes
bytes() {
	local total=0 part n
	[[ $1 =~ ^[0-9]+[KMG]?(\+[0-9]+[KMG]?)*$ ]] || usage
	IFS=+ read -ra parts <<<"$1"
	for part in "${parts[@]}"; do
		case $part in
		*K) n=$((${part%K} << 10)) ;;
		*M) n=$((${part%M} << 20)) ;;
		*G) n=$((${part%G} << 30)) ;;
		*) n=$((10#$part)) ;;
		esac
		total=$((total + n))
	done
	echo "$total"
}

# rnd: R gets a 30-bit pseudo-random number (seeded through RANDOM)
rnd() {
	R=$(((RANDOM << 15) | RANDOM))
}

# keystream LEN IDX: LEN reproducible random bytes, stream IDX of the seed
keystream() {
	openssl enc -aes-128-ctr -nosalt -K "$KEY" -iv "$(printf '%032x' "$2")" \
	    -in /dev/zero 2>/dev/null | head -c "$1"
}

# put POS: write stdin into $OUT at byte POS
put() {
	dd of="$OUT" bs=1M seek="$1" oflag=seek_bytes conv=notrunc \
	    iflag=fullblock status=none
}

# from FILE OFF LEN POS: copy LEN bytes of FILE at OFF into $OUT at POS
from() {
	dd if="$1" of="$OUT" bs=1M skip="$2" count="$3" seek="$4" \
	    iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc status=none
}

# pool NAME MAX DIR...: concatenate regular files under DIRs, up to MAX bytes
pool() {
	local name=$1 max=$2
	shift 2
	find "$@" -xdev -type f -size -4M ! -name '*.gz' 2>/dev/null | sort |
	    xargs -d '\n' cat 2>/dev/null | head -c "$max" >"$WORK/$name" || true
	[ -s "$WORK/$name" ] || keystream "$max" 999999 >"$WORK/$name"
}

MiB=$((1 << 20))

mixed() {
	local size pos len kind textsz binsz off idx=0 k
	size=$(bytes "$1")
	pool text $((16 * MiB)) /usr/share/common-licenses /usr/share/doc
	pool bin $((32 * MiB)) /usr/bin /usr/lib/x86_64-linux-gnu
	textsz=$(stat -c %s "$WORK/text")
	binsz=$(stat -c %s "$WORK/bin")

	rm -f "$OUT"
	truncate -s "$size" "$OUT"
	pos=0
	while [ "$pos" -lt "$size" ]; do
		rnd; len=$((512 + R % (3 * MiB)))
		rnd; kind=$((R % 100))
		if [ "$pos" -eq 0 ]; then
			kind=40		# the first block is never a hole
		fi
		if [ "$kind" -lt 35 ]; then
			# hole; one in five is a big one
			rnd
			[ $((R % 5)) -ne 0 ] || len=$((len + (4 + R % 12) * MiB))
		elif [ "$kind" -ge 95 ] && [ "$pos" -ge $((2 * MiB)) ]; then
			# duplicate of an earlier, finished 1 MiB block
			pos=$(((pos + MiB - 1) / MiB * MiB))
			len=$MiB
			rnd; k=$((R % (pos / MiB - 1)))
			[ $((pos + len)) -gt "$size" ] ||
			    from "$OUT" $((k * MiB)) "$MiB" "$pos"
		fi
		[ $((pos + len)) -le "$size" ] || len=$((size - pos))
		if [ "$kind" -ge 35 ] && [ "$kind" -lt 55 ]; then
			[ "$len" -le "$textsz" ] || len=$textsz
			rnd; off=$((R % (textsz - len + 1)))
			from "$WORK/text" "$off" "$len" "$pos"
		elif [ "$kind" -ge 55 ] && [ "$kind" -lt 75 ]; then
			[ "$len" -le "$binsz" ] || len=$binsz
			rnd; off=$((R % (binsz - len + 1)))
			from "$WORK/bin" "$off" "$len" "$pos"
		elif [ "$kind" -ge 75 ] && [ "$kind" -lt 95 ]; then
			idx=$((idx + 1))
			keystream "$len" "$idx" | put "$pos"
		fi
		pos=$((pos + len))
	done

	# one block of zeros but for a single byte, a third of the way in
	if [ "$size" -ge $((4 * MiB)) ]; then
		pos=$((size / 3 / MiB * MiB))
		head -c "$MiB" /dev/zero | put "$pos"
		printf '\001' | put $((pos + 777777))
	fi
	# data up to the last byte, over the unaligned tail
	len=$((size % MiB + 4097))
	[ "$len" -le "$size" ] || len=$size
	keystream "$len" 0 | put $((size - len))
}

fs() {
	local size budget dir
	size=$(bytes "$1")
	budget=$((size / 2))
	dir=$WORK/root
	mkdir -p "$dir/doc" "$dir/bin" "$dir/random"
	# listfiles SHARE DIR...: paths under DIRs up to SHARE bytes in total
	listfiles() {
		local share=$1
		shift
		find "$@" -xdev -type f -size -8M -printf '%s %p\n' 2>/dev/null |
		    sort -k2 | awk -v max="$share" '
			{ sum += $1; if (sum > max) exit; sub(/^[0-9]+ /, ""); print }'
	}
	listfiles $((budget * 2 / 5)) /usr/share/doc /usr/share/common-licenses \
	    >"$WORK/doc.list"
	listfiles $((budget * 2 / 5)) /usr/bin /usr/lib/x86_64-linux-gnu \
	    >"$WORK/bin.list"
	tar -cf - -P -T "$WORK/doc.list" 2>/dev/null | tar -xf - -C "$dir/doc" 2>/dev/null || true
	tar -cf - -P -T "$WORK/bin.list" 2>/dev/null | tar -xf - -C "$dir/bin" 2>/dev/null || true
	# the last fifth in random files of 1-4 MiB
	local left=$((budget / 5)) n=0 len
	while [ "$left" -gt 0 ]; do
		rnd; len=$((MiB + R % (3 * MiB)))
		[ "$len" -le "$left" ] || len=$left
		n=$((n + 1))
		keystream "$len" "$n" >"$dir/random/file$n.bin"
		left=$((left - len))
	done
	rm -f "$OUT"
	truncate -s "$size" "$OUT"
	mkfs.ext4 -q -F -E root_owner=0:0 -d "$dir" "$OUT"
}

FS=0
if [ "${1:-}" = --fs ]; then
	FS=1
	shift
fi
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
OUT=$1
SEED=${3:-1}
[[ $SEED =~ ^[0-9]+$ ]] || usage
RANDOM=$SEED
KEY=$(printf 'mkimage seed %s' "$SEED" | sha256sum | cut -c1-32)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mkimage.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ "$FS" -eq 1 ]; then
	fs "$2"
else
	mixed "$2"
fi
