/* trl.c - error formatting, aligned allocation and the clock. */
#include "trl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int trl_errf(TrlErr *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return code;
}

void *trl_alloc(size_t bytes)
{
	void *p = NULL;
	size_t rounded = (bytes + 63) & ~(size_t)63;
	if (rounded == 0)
		rounded = 64;
	if (posix_memalign(&p, 64, rounded) != 0)
		return NULL;
	memset(p, 0, rounded);
	return p;
}

void trl_free(void *p) { free(p); }

double trl_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
