/* dataset_cache.c - save and reload tokenized datasets, keyed by their inputs. */
#include "dataset_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_MAGIC "TRLDSET\1"
/* Bump whenever tokenization or the Example layout changes: the old entries
 * then simply stop matching. 2: joint prompt + completion tokenization. */
#define CACHE_VERSION 2u

static uint64_t hash_str(uint64_t h, const char *s)
{
	/* The terminating NUL is hashed too, so ("ab", "c") != ("a", "bc"). */
	return s ? trl_hash64(s, strlen(s) + 1, h) : trl_hash64("\xff", 1, h);
}

static uint64_t hash_int(uint64_t h, long v)
{
	return trl_hash64(&v, sizeof v, h);
}

uint64_t dataset_cache_key(const char *bytes, size_t len, const DatasetOptions *o,
                           const Tokenizer *tok)
{
	uint64_t h = trl_hash64(bytes, len, CACHE_VERSION);
	h = hash_int(h, (long)tok->fingerprint);
	h = hash_str(h, o->text_field);
	h = hash_int(h, o->max_length);
	h = hash_int(h, o->keep_end);
	h = hash_int(h, o->completion_only_loss);
	h = hash_int(h, o->skip_invalid_rows);
	h = hash_int(h, (long)o->format);
	h = hash_int(h, o->assistant_only_loss);
	h = hash_str(h, o->chat_template);
	h = hash_str(h, o->eos_token);
	return h;
}

/* The file: magic, version, key, the Dataset scalars, then per example its
 * scalars and pool offsets, then the three pools. Offsets rebuild every
 * pointer on load. */
typedef struct Header {
	char magic[8];
	uint32_t version;
	uint32_t format;
	uint64_t key;
	int32_t n, n_skipped, n_truncated, conversational, implicit_prompt, pad;
	int64_t n_tokens;
	uint64_t n_ids, n_extra; /* pool sizes: ids (= masks), extra bytes */
	char columns[64];
} Header;

typedef struct Rec {
	int32_t len, prompt_len, line, rejected_len, rejected_prompt_len, label;
	uint64_t off, rejected_off, extra_off;
} Rec;

static void cache_path(char *buf, size_t cap, const char *dir, uint64_t key)
{
	snprintf(buf, cap, "%s/%016llx.trlds", dir, (unsigned long long)key);
}

/* Pool sizes: the largest end of any example's ranges. */
static void pool_sizes(const Dataset *d, uint64_t *n_ids, uint64_t *n_extra)
{
	uint64_t ni = 0, ne = 0;
	for (int i = 0; i < d->n; i++) {
		const Example *e = &d->ex[i];
		if (e->off + (uint64_t)e->len > ni)
			ni = e->off + (uint64_t)e->len;
		if (e->rejected_len && e->rejected_off + (uint64_t)e->rejected_len > ni)
			ni = e->rejected_off + (uint64_t)e->rejected_len;
		if (e->extra && e->extra_off + strlen(e->extra) + 1 > ne)
			ne = e->extra_off + strlen(e->extra) + 1;
	}
	*n_ids = ni;
	*n_extra = ne;
}

static int save(const Dataset *d, const char *dir, uint64_t key)
{
	char path[4200], tmp[4300];
	cache_path(path, sizeof path, dir, key);
	snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
	Header h;
	memset(&h, 0, sizeof h);
	memcpy(h.magic, CACHE_MAGIC, 8);
	h.version = CACHE_VERSION;
	h.format = (uint32_t)d->format;
	h.key = key;
	h.n = d->n;
	h.n_skipped = d->n_skipped;
	h.n_truncated = d->n_truncated;
	h.conversational = d->conversational;
	h.implicit_prompt = d->implicit_prompt;
	h.n_tokens = d->n_tokens;
	pool_sizes(d, &h.n_ids, &h.n_extra);
	memcpy(h.columns, d->columns, sizeof h.columns);
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return TRL_EIO;
	int ok = fwrite(&h, sizeof h, 1, f) == 1;
	for (int i = 0; ok && i < d->n; i++) {
		const Example *e = &d->ex[i];
		Rec r = {e->len,          e->prompt_len,          e->line,
		         e->rejected_len, e->rejected_prompt_len, e->label,
		         e->off,          e->rejected_off,        e->extra_off};
		ok = fwrite(&r, sizeof r, 1, f) == 1;
	}
	if (ok && h.n_ids)
		ok = fwrite(d->id_pool, sizeof(int32_t), h.n_ids, f) == h.n_ids &&
		     fwrite(d->mask_pool, 1, h.n_ids, f) == h.n_ids;
	if (ok && h.n_extra)
		ok = fwrite(d->extra_pool, 1, h.n_extra, f) == h.n_extra;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return TRL_EIO;
	}
	return TRL_OK;
}

/* Loads an entry; any inconsistency (short file, wrong magic or key, offsets
 * outside the pools) is a miss, never a crash or a wrong dataset. */
static int load(Dataset *d, const char *dir, uint64_t key)
{
	char path[4200];
	cache_path(path, sizeof path, dir, key);
	char *buf;
	size_t len;
	if (access(path, R_OK) != 0 || trl_read_file(path, &buf, &len, NULL) != 0)
		return 1;
	Header h;
	int bad = len < sizeof h;
	if (!bad) {
		memcpy(&h, buf, sizeof h);
		bad = memcmp(h.magic, CACHE_MAGIC, 8) != 0 ||
		      h.version != CACHE_VERSION || h.key != key || h.n < 0 ||
		      h.format >= TRL_FMT_COUNT;
	}
	size_t need = 0;
	if (!bad) {
		need = sizeof h + (size_t)h.n * sizeof(Rec) + h.n_ids * 5 + h.n_extra;
		bad = len != need;
	}
	memset(d, 0, sizeof *d);
	if (!bad) {
		d->ex = calloc((size_t)h.n > 0 ? (size_t)h.n : 1, sizeof *d->ex);
		d->id_pool = malloc(h.n_ids ? h.n_ids * sizeof(int32_t) : 1);
		d->mask_pool = malloc(h.n_ids ? h.n_ids : 1);
		d->extra_pool = malloc(h.n_extra ? h.n_extra : 1);
		bad = !d->ex || !d->id_pool || !d->mask_pool || !d->extra_pool;
	}
	if (!bad) {
		const char *p = buf + sizeof h + (size_t)h.n * sizeof(Rec);
		memcpy(d->id_pool, p, h.n_ids * sizeof(int32_t));
		memcpy(d->mask_pool, p + h.n_ids * sizeof(int32_t), h.n_ids);
		memcpy(d->extra_pool, p + h.n_ids * 5, h.n_extra);
	}
	for (int i = 0; !bad && i < h.n; i++) {
		Rec r;
		memcpy(&r, buf + sizeof h + (size_t)i * sizeof r, sizeof r);
		bad = r.len < 0 || r.rejected_len < 0 || r.prompt_len < 0 ||
		      r.prompt_len > r.len || r.rejected_prompt_len < 0 ||
		      r.rejected_prompt_len > r.rejected_len || r.label < -1 ||
		      r.label > 1 || r.off + (uint64_t)r.len > h.n_ids ||
		      r.rejected_off + (uint64_t)r.rejected_len > h.n_ids ||
		      r.extra_off >= h.n_extra;
		if (!bad)
			bad = memchr(d->extra_pool + r.extra_off, 0,
			             h.n_extra - r.extra_off) == NULL;
		if (bad)
			break;
		Example *e = &d->ex[i];
		e->len = r.len;
		e->prompt_len = r.prompt_len;
		e->line = r.line;
		e->rejected_len = r.rejected_len;
		e->rejected_prompt_len = r.rejected_prompt_len;
		e->label = r.label;
		e->off = r.off;
		e->rejected_off = r.rejected_off;
		e->extra_off = r.extra_off;
		e->ids = d->id_pool + r.off;
		e->mask = d->mask_pool + r.off;
		if (r.rejected_len) {
			e->rejected_ids = d->id_pool + r.rejected_off;
			e->rejected_mask = d->mask_pool + r.rejected_off;
		}
		e->extra = d->extra_pool + r.extra_off;
	}
	trl_free(buf);
	if (bad) {
		dataset_free(d);
		return 1;
	}
	d->format = (TrlDataFormat)h.format;
	d->n = h.n;
	d->n_skipped = h.n_skipped;
	d->n_truncated = h.n_truncated;
	d->conversational = h.conversational;
	d->implicit_prompt = h.implicit_prompt;
	d->n_tokens = h.n_tokens;
	memcpy(d->columns, h.columns, sizeof d->columns);
	d->columns[sizeof d->columns - 1] = 0;
	return 0;
}

int dataset_load_cached(Dataset *d, const char *path, const DatasetOptions *opt,
                        const Tokenizer *tok, const char *cache_dir, int write, int *hit,
                        TrlErr *err)
{
	*hit = 0;
	if (!cache_dir || !cache_dir[0])
		return dataset_load_jsonl(d, path, opt, tok, err);
	char *bytes;
	size_t len;
	int rc = trl_read_file(path, &bytes, &len, err);
	if (rc)
		return rc;
	uint64_t key = dataset_cache_key(bytes, len, opt, tok);
	trl_free(bytes);
	if (load(d, cache_dir, key) == 0) {
		*hit = 1;
		return TRL_OK;
	}
	rc = dataset_load_jsonl(d, path, opt, tok, err);
	if (!rc && write && trl_mkdirs(cache_dir, NULL) == 0)
		save(d, cache_dir, key);
	return rc;
}
