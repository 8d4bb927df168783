/*
 * test_disk.c: the disk interface on local files (disk.c): sizes, exact
 * reads, holes, concurrent readers, what does not open, and the
 * transport rules that refuse before connecting.  NBD exports are
 * tested with real servers in tests/integration/nbd.sh.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "source.h"

#define MiB		(1u << 20)
#define SPARSE_SIZE	(10 * MiB + 123)
#define READERS		4

struct fixture {
	char		 dir[64];
	char		 path[128];
	uint8_t		*want;		/* the file's bytes */
	uint64_t	 size;
};

/* The data regions of the sparse file; the rest is holes. */
static const struct {
	uint64_t	 off;
	uint64_t	 len;
} regions[] = {
	{ 0, 4096 },
	{ 5 * MiB + 4096, MiB + 17 },
	{ SPARSE_SIZE - 100, 100 },
};

static int
setup(void **state)
{
	struct fixture	*fx;
	uint64_t	 i, j;
	int		 fd;

	if ((fx = calloc(1, sizeof(*fx))) == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_disk.XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/sparse.img", fx->dir);
	fx->size = SPARSE_SIZE;
	if ((fx->want = calloc(1, fx->size)) == NULL)
		return -1;
	for (i = 0; i < sizeof(regions) / sizeof(regions[0]); i++)
		for (j = 0; j < regions[i].len; j++)
			fx->want[regions[i].off + j] =
			    (uint8_t)(1 + (regions[i].off + j) * 7 % 251);
	if ((fd = open(fx->path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1)
		return -1;
	if (ftruncate(fd, (off_t)fx->size) == -1)
		return -1;
	for (i = 0; i < sizeof(regions) / sizeof(regions[0]); i++)
		if (pwrite(fd, fx->want + regions[i].off, regions[i].len,
		    (off_t)regions[i].off) != (ssize_t)regions[i].len)
			return -1;
	if (fsync(fd) == -1 || close(fd) == -1)
		return -1;
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture	*fx = *state;
	char		 cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	if (system(cmd) != 0)
		return -1;
	free(fx->want);
	free(fx);
	return 0;
}

static void
test_size_and_reads(void **state)
{
	struct fixture	*fx = *state;
	struct disk	*dk;
	uint8_t		*buf;
	uint64_t	 total = 0;

	assert_non_null(dk = disk_open(fx->path, NULL));
	assert_int_equal(disk_size(dk), fx->size);
	assert_string_equal(disk_transport_name(dk), "direct");
	assert_non_null(buf = malloc(fx->size));

	/* The whole disk at once. */
	assert_int_equal(disk_read(dk, buf, fx->size, 0), 0);
	assert_memory_equal(buf, fx->want, fx->size);
	total += fx->size;

	/* Partial, unaligned, across a data-hole boundary. */
	assert_int_equal(disk_read(dk, buf, 10000, 4000), 0);
	assert_memory_equal(buf, fx->want + 4000, 10000);
	total += 10000;
	assert_int_equal(disk_read(dk, buf, 3 * MiB, 5 * MiB - 1), 0);
	assert_memory_equal(buf, fx->want + 5 * MiB - 1, 3 * MiB);
	total += 3 * MiB;

	/* Up to the last byte, and the last byte alone. */
	assert_int_equal(disk_read(dk, buf, 1000, fx->size - 1000), 0);
	assert_memory_equal(buf, fx->want + fx->size - 1000, 1000);
	assert_int_equal(disk_read(dk, buf, 1, fx->size - 1), 0);
	assert_int_equal(buf[0], fx->want[fx->size - 1]);
	total += 1001;

	/* Nothing at the end; nothing past it. */
	assert_int_equal(disk_read(dk, buf, 0, fx->size), 0);
	errno = 0;
	assert_int_equal(disk_read(dk, buf, 2, fx->size - 1), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(disk_read(dk, buf, 1, fx->size), -1);
	assert_int_equal(disk_read(dk, buf, 1, UINT64_MAX), -1);

	assert_int_equal(disk_bytes_read(dk), total);
	free(buf);
	disk_close(dk);
}

static void
test_next_data(void **state)
{
	struct fixture	*fx = *state;
	struct disk	*dk;
	uint8_t		*covered;
	uint64_t	 off, start, end, data = 0, i;
	int		 rv, n = 0;

	assert_non_null(dk = disk_open(fx->path, NULL));
	assert_non_null(covered = calloc(1, fx->size));
	for (off = 0; (rv = disk_next_data(dk, off, &start, &end)) == 0;
	    off = end) {
		assert_true(start >= off);
		assert_true(end > start);
		assert_true(end <= fx->size);
		memset(covered + start, 1, end - start);
		data += end - start;
		assert_true(++n < 1000);
	}
	assert_int_equal(rv, 1);
	/* Every non-zero byte is inside an extent... */
	for (i = 0; i < fx->size; i++)
		if (fx->want[i] != 0)
			assert_int_equal(covered[i], 1);
	/* ...and the holes were skipped (file systems round to blocks). */
	assert_true(data < 3 * MiB);
	assert_true(n >= 2);

	/* From inside an extent: starts there, not before. */
	assert_int_equal(disk_next_data(dk, 100, &start, &end), 0);
	assert_int_equal(start, 100);
	/* From inside a hole: the next extent. */
	assert_int_equal(disk_next_data(dk, 2 * MiB, &start, &end), 0);
	assert_true(start > 2 * MiB && start <= 5 * MiB + 4096);
	/* At or past the end: only holes remain. */
	assert_int_equal(disk_next_data(dk, fx->size, &start, &end), 1);
	assert_int_equal(disk_next_data(dk, UINT64_MAX, &start, &end), 1);
	assert_int_equal(disk_bytes_read(dk), 0);
	free(covered);
	disk_close(dk);
}

struct reader {
	struct disk		*rd_disk;
	const struct fixture	*rd_fx;
	unsigned int		 rd_seed;
	int			 rd_bad;
	uint64_t		 rd_bytes;
};

static void *
reader(void *arg)
{
	struct reader	*rd = arg;
	uint8_t		*buf;
	uint64_t	 off, len;
	int		 i;

	if ((buf = malloc(MiB)) == NULL) {
		rd->rd_bad++;
		return NULL;
	}
	for (i = 0; i < 200; i++) {
		off = (uint64_t)rand_r(&rd->rd_seed) % rd->rd_fx->size;
		len = 1 + (uint64_t)rand_r(&rd->rd_seed) % MiB;
		if (len > rd->rd_fx->size - off)
			len = rd->rd_fx->size - off;
		if (disk_read(rd->rd_disk, buf, len, off) == -1 ||
		    memcmp(buf, rd->rd_fx->want + off, len) != 0)
			rd->rd_bad++;
		rd->rd_bytes += len;
	}
	free(buf);
	return NULL;
}

static void
test_concurrent_reads(void **state)
{
	struct fixture	*fx = *state;
	struct reader	 rd[READERS];
	pthread_t	 tid[READERS];
	struct disk	*dk;
	uint64_t	 bytes = 0;
	int		 i;

	assert_non_null(dk = disk_open(fx->path, NULL));
	for (i = 0; i < READERS; i++) {
		rd[i].rd_disk = dk;
		rd[i].rd_fx = fx;
		rd[i].rd_seed = 1234u + (unsigned int)i;
		rd[i].rd_bad = 0;
		rd[i].rd_bytes = 0;
		assert_int_equal(pthread_create(&tid[i], NULL, reader,
		    &rd[i]), 0);
	}
	for (i = 0; i < READERS; i++) {
		assert_int_equal(pthread_join(tid[i], NULL), 0);
		assert_int_equal(rd[i].rd_bad, 0);
		bytes += rd[i].rd_bytes;
	}
	assert_int_equal(disk_bytes_read(dk), bytes);
	disk_close(dk);
}

/*
 * disk_open's log line: stderr is captured into msg while it runs.
 * Returns the disk (closed here) or NULL, as a boolean.
 */
static int
open_msg(const char *spec, const struct disk_opts *opts, char *msg,
    size_t len)
{
	struct disk	*dk;
	FILE		*fp;
	size_t		 n;
	int		 save;

	assert_non_null(fp = tmpfile());
	fflush(stderr);
	assert_int_not_equal(save = dup(STDERR_FILENO), -1);
	assert_int_not_equal(dup2(fileno(fp), STDERR_FILENO), -1);
	dk = disk_open(spec, opts);
	fflush(stderr);
	assert_int_not_equal(dup2(save, STDERR_FILENO), -1);
	close(save);
	rewind(fp);
	n = fread(msg, 1, len - 1, fp);
	msg[n] = '\0';
	fclose(fp);
	disk_close(dk);
	return dk != NULL;
}

/* One line, naming the disk. */
static void
assert_one_line(const char *msg, const char *spec)
{
	const char	*nl = strchr(msg, '\n');

	assert_non_null(nl);
	assert_null(strchr(nl + 1, '\n'));
	assert_non_null(strstr(msg, spec));
}

static void
test_open_errors(void **state)
{
	struct fixture	*fx = *state;
	char		 path[160], msg[2048];
	int		 fd;

	snprintf(path, sizeof(path), "%s/absent.img", fx->dir);
	assert_false(open_msg(path, NULL, msg, sizeof(msg)));
	assert_one_line(msg, path);
	assert_non_null(strstr(msg, "No such file"));

	assert_false(open_msg(fx->dir, NULL, msg, sizeof(msg)));
	assert_one_line(msg, fx->dir);
	assert_non_null(strstr(msg, "directory"));

	snprintf(path, sizeof(path), "%s/empty.img", fx->dir);
	assert_int_not_equal(fd = open(path, O_WRONLY | O_CREAT, 0600), -1);
	close(fd);
	assert_false(open_msg(path, NULL, msg, sizeof(msg)));
	assert_one_line(msg, path);
	assert_non_null(strstr(msg, "empty"));

	assert_false(open_msg("", NULL, msg, sizeof(msg)));
	assert_false(open_msg("http://example.com/disk", NULL, msg,
	    sizeof(msg)));
	assert_one_line(msg, "http://example.com/disk");
	assert_non_null(strstr(msg, "scheme"));
}

static void
test_transport_rules(void **state)
{
	struct fixture		*fx = *state;
	struct disk_opts	 opts;
	char			 msg[2048];

	memset(&opts, 0, sizeof(opts));
	opts.do_transport = DISK_TRANSPORT_DIRECT;
	assert_false(open_msg("nbd+unix:///x?socket=/nonexistent", &opts,
	    msg, sizeof(msg)));
	assert_non_null(strstr(msg, "--transport nbd or auto"));
	assert_one_line(msg, "nbd+unix:///x");

	opts.do_transport = DISK_TRANSPORT_NBD;
	assert_false(open_msg(fx->path, &opts, msg, sizeof(msg)));
	assert_non_null(strstr(msg, "local path"));
	assert_one_line(msg, fx->path);

	/* auto and explicit direct read a file directly. */
	opts.do_transport = DISK_TRANSPORT_DIRECT;
	assert_true(open_msg(fx->path, &opts, msg, sizeof(msg)));
	assert_string_equal(msg, "");
	opts.do_transport = DISK_TRANSPORT_AUTO;
	opts.do_no_fallback = 1;
	assert_true(open_msg(fx->path, &opts, msg, sizeof(msg)));
	assert_string_equal(msg, "");

	/*
	 * A Unix socket is an NBD server's: auto and nbd connect to it
	 * (nobody listens on this one), direct and auto --no-fallback
	 * refuse it.
	 */
	{
		struct sockaddr_un	 sun;
		int			 s;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/nbd.sock",
		    fx->dir);
		assert_int_not_equal(s = socket(AF_UNIX, SOCK_STREAM, 0), -1);
		assert_int_equal(bind(s, (struct sockaddr *)&sun,
		    sizeof(sun)), 0);
		opts.do_transport = DISK_TRANSPORT_AUTO;
		opts.do_no_fallback = 1;
		assert_false(open_msg(sun.sun_path, &opts, msg, sizeof(msg)));
		assert_non_null(strstr(msg, "Unix socket"));
		assert_non_null(strstr(msg, "--no-fallback"));
		assert_one_line(msg, sun.sun_path);
		opts.do_transport = DISK_TRANSPORT_DIRECT;
		assert_false(open_msg(sun.sun_path, &opts, msg, sizeof(msg)));
		assert_non_null(strstr(msg, "Unix socket"));
		opts.do_no_fallback = 0;
		opts.do_transport = DISK_TRANSPORT_AUTO;
		assert_false(open_msg(sun.sun_path, &opts, msg, sizeof(msg)));
		assert_non_null(strstr(msg, "cannot connect to NBD disk"));
		assert_one_line(msg, sun.sun_path);
		opts.do_transport = DISK_TRANSPORT_NBD;
		assert_false(open_msg(sun.sun_path, &opts, msg, sizeof(msg)));
		assert_non_null(strstr(msg, "cannot connect to NBD disk"));
		close(s);
	}

	/* Dirty maps come from NBD only. */
	{
		struct disk	*dk;
		uint8_t		*map = (uint8_t *)"x";
		char		 why[256];

		assert_non_null(dk = disk_open(fx->path, NULL));
		assert_int_equal(disk_dirty_map(dk, MiB, &map, why,
		    sizeof(why)), -1);
		assert_null(map);
		assert_non_null(strstr(why, "NBD"));
		disk_close(dk);
	}
}

/*
 * Plain nbd:// beyond loopback is refused before any connection is
 * attempted (the addresses below are never contacted); loopback is
 * allowed, and fails only because nothing listens on port 1.
 */
static void
test_insecure_nbd(void **state)
{
	static const char	*remote[] = {
		"nbd://192.0.2.1/disk",
		"nbd://192.0.2.1:10809/disk",
		"nbd://example.com/disk",
		"nbd://localhost.example.com/disk",
		"nbd://127.0.0.1@192.0.2.1/disk",
		"nbd://a@b@127.0.0.1/disk",
		"nbd://[2001:db8::1]:10809/disk",
		"nbd://%31%32%37.0.0.1/disk",
		"nbd://127.0.0.1:10809x/disk",
		"nbd://10.0.0.1",
		"nbd://0.0.0.0/",
	};
	static const char	*local[] = {
		"nbd://127.0.0.1:1/disk",
		"nbd://127.3.2.1:1/",
		"nbd://[::1]:1/disk",
		"nbd://localhost:1",
		"nbd://user@127.0.0.1:1/disk?x=y",
	};
	struct disk_opts	 opts;
	char			 msg[2048];
	size_t			 i;

	memset(&opts, 0, sizeof(opts));
	for (i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
		assert_false(open_msg(remote[i], &opts, msg, sizeof(msg)));
		if (strstr(msg, "refusing plain NBD") == NULL ||
		    strstr(msg, "nbds://") == NULL)
			fail_msg("%s not refused: %s", remote[i], msg);
		assert_one_line(msg, remote[i]);
	}
	for (i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
		assert_false(open_msg(local[i], &opts, msg, sizeof(msg)));
		if (strstr(msg, "refusing") != NULL ||
		    strstr(msg, "cannot connect") == NULL)
			fail_msg("%s: %s", local[i], msg);
		assert_one_line(msg, local[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_size_and_reads, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_next_data, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_reads, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_transport_rules, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_insecure_nbd, setup,
		    teardown),
	};

	log_init("test_disk", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
