/* trl.c - error formatting, aligned allocation and the clock. */
#include "trl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int trl_errf(TrlErr *err, int code, const char *fmt, ...)
{
	if (err) {
		/* Formatted into a copy first: callers often prefix the message
		 * already in err ("%s: %s", where, err->msg). */
		char tmp[sizeof err->msg];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(tmp, sizeof tmp, fmt, ap);
		va_end(ap);
		memcpy(err->msg, tmp, sizeof tmp);
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

void trl_free(void *p)
{
	free(p);
}

double trl_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int trl_read_file(const char *path, char **buf, size_t *len, TrlErr *err)
{
	*buf = NULL;
	*len = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return trl_errf(err, TRL_EIO, "cannot open %s: %s", path,
		                strerror(errno));
	struct stat st;
	size_t cap = 1 << 16, n = 0;
	if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
		cap = (size_t)st.st_size + 1;
	char *b = trl_alloc(cap);
	int rc = b ? TRL_OK : TRL_ENOMEM;
	while (!rc) {
				n += fread(b + n, 1, cap - 1 - n, f);
		if (n < cap - 1)
			break; /* end of file or an error, told apart below */
		/* Full: a regular file read whole ends here, without growing the
		 * buffer (a copy of it twice the size). */
		int ch = fgetc(f);
		if (ch == EOF)
			break;
		char *nb = trl_alloc(2 * cap);
		if (!nb) {
			rc = TRL_ENOMEM;
			break;
		}
				memcpy(nb, b, n);
		trl_free(b);
		b = nb;
		b[n++] = (char)ch;
		cap *= 2;
	}
	int bad = ferror(f), e = errno;
	fclose(f);
	if (!rc && bad)
		rc = trl_errf(err, TRL_EIO, "cannot read %s: %s", path, strerror(e));
	else if (rc == TRL_ENOMEM)
		trl_errf(err, rc, "%s: out of memory reading it", path);
	if (rc) {
		trl_free(b);
		return rc;
	}
	b[n] = 0;
	*buf = b;
	*len = n;
	return TRL_OK;
}

int trl_mkdirs(const char *dir, TrlErr *err)
{
	char buf[4096];
	if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
		return trl_errf(err, TRL_EINVAL, "path too long: %s", dir);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != 0)
			continue;
		char c = *p;
		*p = 0;
		if (mkdir(buf, 0777) != 0 && errno != EEXIST)
			return trl_errf(err, TRL_EIO, "cannot create directory '%s': %s",
			                buf, strerror(errno));
		*p = c;
		if (!c)
			break;
	}
	return TRL_OK;
}

uint64_t trl_hash64(const void *bytes, size_t n, uint64_t seed)
{
	const unsigned char *p = bytes;
	uint64_t h = 0xcbf29ce484222325ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

int trl_sync_path(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}
