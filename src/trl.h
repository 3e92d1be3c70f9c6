/* trl.h - status codes, error messages and allocation helpers shared by every module.
 *
 * A function that can fail returns int: TRL_OK (0) or a negative TRL_E* code, and
 * writes a message meant for the user into the caller's TrlErr with trl_errf().
 * Library code never calls exit(): in an MPI job one rank exiting strands the others.
 */
#ifndef TRL_H
#define TRL_H

#include <stddef.h>
#include <stdint.h>

#define TRL_VERSION_STRING "0.1.0"

enum {
	TRL_OK = 0,
	TRL_EINVAL = -1,       /* bad user input: config, data, arguments */
	TRL_EIO = -2,          /* a file could not be read or written */
	TRL_ENOMEM = -3,       /* an allocation failed */
	TRL_EFORMAT = -4,      /* a file is malformed */
	TRL_EUNSUPPORTED = -5, /* valid input we do not handle */
	TRL_EINTERNAL = -6,    /* a bug */
	TRL_ESTOPPED = -7      /* stopped on request (a signal) after saving the state */
};

typedef struct TrlErr {
	int code;
	char msg[2048];
} TrlErr;

/* Formats a message into err (if err is not NULL) and returns code, so that
 * `return trl_errf(err, TRL_EINVAL, "...")` reads naturally. The arguments
 * may include err->msg itself, to prefix the message already there. */
int trl_errf(TrlErr *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 64-byte aligned, zero-filled allocation; NULL on failure. Free with trl_free. */
void *trl_alloc(size_t bytes);
void trl_free(void *p);

/* Hands out consecutive 16-float (64-byte) aligned pieces of one float slab.
 * With base NULL it only counts, so the same code first sizes an allocation
 * (cv.off after the last piece) and then carves it. */
typedef struct TrlCarver {
	float *base;
	size_t off; /* floats handed out so far, rounded up to 16 each */
} TrlCarver;

static inline float *trl_carve(TrlCarver *cv, size_t n)
{
	float *p = cv->base ? cv->base + cv->off : NULL;
	cv->off += (n + 15) & ~(size_t)15;
	return p;
}

/* Reads a whole file into *buf (64-byte aligned, NUL-terminated after *len
 * bytes; free with trl_free). Regular files are read in one go, pipes in
 * growing chunks. Errors name the path and the system's reason. */
int trl_read_file(const char *path, char **buf, size_t *len, TrlErr *err);

/* 64-bit FNV-1a of bytes, continuing from seed (a previous hash or any
 * constant): for cache keys and fingerprints, not for security. */
uint64_t trl_hash64(const void *bytes, size_t n, uint64_t seed);

/* fsync of a file or folder by path (a folder: its entries, after a
 * rename). Returns 0 or -1 with errno set. */
int trl_sync_path(const char *path);

/* Creates dir and its missing parents (mkdir -p). */
int trl_mkdirs(const char *dir, TrlErr *err);

/* Wall-clock seconds from a monotonic clock. */
double trl_now(void);

#endif
