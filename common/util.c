/*
 * util.c: small helpers shared by both daemons: clocks, name checks,
 * human-readable sizes, memory usage.
 */
#include <sys/types.h>
#include <sys/resource.h>

#include <stdint.h>
#include <errno.h>
#include <malloc.h>
#include <search.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"

/* Returns milliseconds of a monotonic clock (not wall-clock time). */
uint64_t
now_ms(void)
{
	struct timespec	 ts;

	/* Cannot fail with a valid clock id and pointer. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		fatal("clock_gettime");
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Returns 1 if name is a valid backup name: 1 to NAME_MAX_LEN characters
 * of [A-Za-z0-9._-], not starting with '.' or '-' (so it is safe as a
 * file name and as a command-line argument), else 0.
 */
int
name_is_valid(const char *name)
{
	size_t	 i;
	char	 c;

	if (name == NULL || name[0] == '\0' || name[0] == '.' ||
	    name[0] == '-')
		return 0;
	for (i = 0; name[i] != '\0'; i++) {
		if (i >= NAME_MAX_LEN)
			return 0;
		c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/*
 * Writes n as "512 B", "1.5 KiB" ... "2.0 TiB" (binary units, one
 * decimal) into buf of len bytes, truncated if need be.
 */
void
format_bytes(uint64_t n, char *buf, size_t len)
{
	static const char	*units[] = { "KiB", "MiB", "GiB", "TiB" };
	double			 v;
	size_t			 u;

	if (len == 0)
		return;
	if (n < 1024) {
		(void)snprintf(buf, len, "%llu B", (unsigned long long)n);
		return;
	}
	v = (double)n / 1024.0;
	/* Move up while the rounded value would print as 1024.0 or more. */
	for (u = 0; u < sizeof(units) / sizeof(units[0]) - 1 &&
	    v >= 1023.95; u++)
		v /= 1024.0;
	(void)snprintf(buf, len, "%.1f %s", v, units[u]);
}

/* Returns the peak resident set size of this process in KiB, or -1. */
long
peak_rss_kib(void)
{
	struct rusage	 ru;

	if (getrusage(RUSAGE_SELF, &ru) == -1)
		return -1;
	/* Linux reports ru_maxrss in KiB already. */
	return ru.ru_maxrss;
}

/*
 * Keeps the 1-2 MiB block buffers in the heap instead of a fresh mmap
 * (and its page faults) per block: measured 3-5% of a restore's CPU
 * (docs/PERFORMANCE.md).  Memory stays bounded by the callers' queues.
 */
void
tune_malloc(void)
{
	(void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
	(void)mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

/* Prints s to stdout as a JSON string, quotes and escapes included. */
void
json_print_string(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

/*
 * Adds a copy of the len bytes at id to the tsearch set ordered by cmp
 * (free it with tdestroy(set, free)): 1 if it was not there, 0 if it
 * was, -1 (ENOMEM).
 */
int
id_set_add(void **set, const void *id, size_t len,
    int (*cmp)(const void *, const void *))
{
	void	*copy;

	if (tfind(id, set, cmp) != NULL)
		return 0;
	/* The tree keeps the pointer: a copy outlives what id is in. */
	if ((copy = malloc(len)) == NULL)
		return -1;
	memcpy(copy, id, len);
	if (tsearch(copy, set, cmp) == NULL) {
		free(copy);
		errno = ENOMEM;
		return -1;
	}
	return 1;
}

/* 1 if len bytes at buf are all zero (a block not worth storing). */
int
buf_is_zero(const void *buf, size_t len)
{
	static const uint8_t	 zero[64];
	const uint8_t		*p = buf;

	if (len <= sizeof(zero))
		return memcmp(p, zero, len) == 0;
	/* The first 64 bytes are zero, so compare the rest with itself. */
	return memcmp(p, zero, sizeof(zero)) == 0 &&
	    memcmp(p, p + sizeof(zero), len - sizeof(zero)) == 0;
}
