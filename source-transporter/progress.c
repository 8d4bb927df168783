/*
 * progress.c: a progress line for interactive use.  Drawn only when
 * standard output is a terminal (and the output is not JSON), at most
 * a few times a second, on one line rewritten with a carriage return.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

#define PROGRESS_INTERVAL_MS	250
#define PROGRESS_BAR_WIDTH	24

/* Starts a progress line for total bytes, if stdout is a terminal. */
void
progress_start(struct progress *pg, const char *what, uint64_t total,
    int json)
{
	memset(pg, 0, sizeof(*pg));
	pg->pg_on = !json && isatty(STDOUT_FILENO);
	pg->pg_what = what;
	pg->pg_total = total;
	pg->pg_start_ms = now_ms();
}

/*
 * Redraws the line: done of total bytes, the rate, the time left, and
 * the ratio of done to sent (compression and deduplication together)
 * when sent is not zero.
 */
void
progress_update(struct progress *pg, uint64_t done, uint64_t sent)
{
	char		 bar[PROGRESS_BAR_WIDTH + 1], d[32], t[32], r[32];
	uint64_t	 now = now_ms(), ms, rate, eta;
	int		 i, filled;

	if (!pg->pg_on || (now - pg->pg_last_ms < PROGRESS_INTERVAL_MS &&
	    done < pg->pg_total))
		return;
	pg->pg_last_ms = now;
	if (done > pg->pg_total)
		done = pg->pg_total;
	ms = now - pg->pg_start_ms;
	rate = ms > 0 ? done * 1000 / ms : 0;
	eta = rate > 0 ? (pg->pg_total - done) / rate : 0;
	filled = pg->pg_total ? (int)(done * PROGRESS_BAR_WIDTH /
	    pg->pg_total) : PROGRESS_BAR_WIDTH;
	for (i = 0; i < PROGRESS_BAR_WIDTH; i++)
		bar[i] = i < filled ? '=' : ' ';
	bar[PROGRESS_BAR_WIDTH] = '\0';
	format_bytes(done, d, sizeof(d));
	format_bytes(pg->pg_total, t, sizeof(t));
	format_bytes(rate, r, sizeof(r));
	printf("\r%s [%s] %3d%% %s/%s %s/s ETA %llu:%02llu", pg->pg_what, bar,
	    pg->pg_total ? (int)(done * 100 / pg->pg_total) : 100, d, t, r,
	    (unsigned long long)(eta / 60), (unsigned long long)(eta % 60));
	if (sent > 0)
		printf(" ratio %.1f:1", (double)done / sent);
	printf("\033[K");
	fflush(stdout);
	pg->pg_drawn = 1;
}

/* Ends the line so that what is printed next starts on its own. */
void
progress_end(struct progress *pg)
{
	if (pg->pg_on && pg->pg_drawn) {
		printf("\r\033[K");
		fflush(stdout);
	}
	pg->pg_drawn = 0;
}
