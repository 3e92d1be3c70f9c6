/* dataset.c - JSONL loading and tokenization, BFD packing, batches, the sampler. */
#include "dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rng.h"

/* State while loading: the growing pools and example array, and the format the
 * first valid row fixed. */
typedef struct Loader {
	Dataset *d;
	const char *path;
	const DatasetOptions *opt;
	const Tokenizer *tok;
	int have_format;
	size_t ntok, tokcap; /* tokens used / allocated in both pools */
	int excap;
} Loader;

/* Row outcomes besides 0: a bad row that skip_invalid_rows may skip, or
 * (negative) an error that stops loading whatever the options. */
enum { ROW_BAD = 1 };

static int grow_pools(Loader *L, size_t need)
{
	if (need <= L->tokcap)
		return 0;
	size_t cap = L->tokcap ? L->tokcap : 1 << 16;
	while (cap < need)
		cap *= 2;
	int32_t *ids = realloc(L->d->id_pool, cap * sizeof *ids);
	if (!ids)
		return TRL_ENOMEM;
	L->d->id_pool = ids;
	uint8_t *mask = realloc(L->d->mask_pool, cap);
	if (!mask)
		return TRL_ENOMEM;
	L->d->mask_pool = mask;
	L->tokcap = cap;
	return 0;
}

/* Appends the tokens of text to the id pool; *n is their count. */
static int encode_append(Loader *L, const char *text, size_t len, int *n, TrlErr *err)
{
	for (;;) {
		size_t room = L->tokcap - L->ntok;
		int cap = room > (size_t)INT_MAX ? INT_MAX : (int)room;
		int got = tokenizer_encode(L->tok, text, len, L->d->id_pool + L->ntok,
		                           cap, err);
		if (got < 0)
			return got;
		if (got <= cap) {
			L->ntok += (size_t)got;
			*n = got;
			return 0;
		}
		if (grow_pools(L, L->ntok + (size_t)got) < 0)
			return trl_errf(err, TRL_ENOMEM, "out of memory tokenizing %s",
			                L->path);
	}
}

/* Tokenizes one example (prompt may be NULL for language modeling), appends EOS,
 * truncates and writes its mask. */
static int add_example(Loader *L, const JsonValue *prompt, const JsonValue *text,
                       int line, TrlErr *err)
{
	Dataset *d = L->d;
	const DatasetOptions *o = L->opt;
	if (d->n == L->excap) {
		int cap = L->excap ? 2 * L->excap : 1024;
		Example *ex = realloc(d->ex, (size_t)cap * sizeof *ex);
		if (!ex)
			return trl_errf(err, TRL_ENOMEM, "out of memory loading %s",
			                L->path);
		d->ex = ex;
		L->excap = cap;
	}
	size_t start = L->ntok;
	int np = 0, nt = 0, rc;
	if (prompt && (rc = encode_append(L, prompt->str, prompt->len, &np, err)) < 0)
		return rc;
	if ((rc = encode_append(L, text->str, text->len, &nt, err)) < 0)
		return rc;
	if (grow_pools(L, L->ntok + 1) < 0)
		return trl_errf(err, TRL_ENOMEM, "out of memory tokenizing %s", L->path);
	d->id_pool[L->ntok++] = L->tok->eos_id;
	size_t len = L->ntok - start;
	if (len > (size_t)INT_MAX)
		return trl_errf(err, TRL_EINVAL,
		                "%s:%d: the example has %zu tokens, too many", L->path,
		                line, len);
	int32_t *ids = d->id_pool + start;
	int prompt_len = np;
	if (o->max_length > 0 && len > (size_t)o->max_length) {
		size_t keep = (size_t)o->max_length;
		if (o->keep_end) {
			size_t drop = len - keep;
			memmove(ids, ids + drop, keep * sizeof *ids);
			prompt_len =
			    (size_t)prompt_len > drop ? prompt_len - (int)drop : 0;
		} else if (prompt_len > o->max_length) {
			prompt_len = o->max_length;
		}
		len = keep;
		L->ntok = start + keep;
		d->n_truncated++;
	}
	/* Token 0 has nothing before it to be predicted from, so it is never a target. */
	int completion_only = prompt && o->completion_only_loss != 0;
	uint8_t *mask = d->mask_pool + start;
	for (size_t t = 0; t < len; t++)
		mask[t] = t > 0 && (!completion_only || t >= (size_t)prompt_len);
	Example *e = &d->ex[d->n++];
	e->ids = NULL; /* set once the pools stop moving */
	e->mask = NULL;
	e->len = (int)len;
	e->prompt_len = prompt_len;
	e->line = line;
	d->n_tokens += (long)len;
	return 0;
}

/* Lists an object's member names into buf for a message. */
static const char *list_columns(const JsonValue *row, char *buf, size_t cap)
{
	size_t used = 0;
	buf[0] = 0;
	for (size_t i = 0; i < row->len && used + 1 < cap; i++) {
		int w = snprintf(buf + used, cap - used, "%s'%s'", i ? ", " : "",
		                 row->members[i].key);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	if (row->len == 0)
		snprintf(buf, cap, "none");
	return buf;
}

static int is_list(const JsonValue *v)
{
	return v && v->type == JSON_ARRAY;
}

/* Fixes the format from the first valid row, or explains why the data is not SFT
 * data in a supported form. */
static int detect_format(Loader *L, const JsonValue *row, int line, TrlErr *err)
{
	const char *path = L->path;
	if (json_get(row, "messages") || json_get(row, "conversations") ||
	    is_list(json_get(row, "prompt")) || is_list(json_get(row, "completion")))
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "%s:%d: conversational data (a 'messages' or 'conversations' "
		    "column, or prompt/completion given as lists of messages) needs "
		    "the chat-template support of a later version of trl-hpc; give "
		    "plain strings in '%s', or 'prompt' and 'completion'",
		    path, line, L->opt->text_field);
	if (json_get(row, "chosen") || json_get(row, "rejected"))
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "%s:%d: this is preference data ('chosen'/'rejected' columns), "
		    "which is for DPO or reward training, not SFT",
		    path, line);
	if (json_get(row, "prompt")) {
		if (!json_get(row, "completion"))
			return trl_errf(err, ROW_BAD,
			                "%s:%d: the row has 'prompt' but no 'completion' "
			                "(prompt-only data is not for SFT)",
			                path, line);
		L->d->format = TRL_FMT_PROMPT_COMPLETION;
	} else if (json_get(row, L->opt->text_field)) {
		L->d->format = TRL_FMT_LANGUAGE_MODELING;
	} else {
		char cols[256];
		return trl_errf(
		    err, ROW_BAD,
		    "%s:%d: cannot tell the dataset format from the columns (%s): "
		    "expected '%s' (language modeling) or 'prompt' and 'completion' "
		    "(prompt-completion)",
		    path, line, list_columns(row, cols, sizeof cols), L->opt->text_field);
	}
	return 0;
}

/* Returns the string column name of row, or NULL with a message in err. */
static const JsonValue *string_column(Loader *L, const JsonValue *row, const char *name,
                                      int line, TrlErr *err)
{
	const JsonValue *v = json_get(row, name);
	if (!v) {
		if (L->d->format == TRL_FMT_PROMPT_COMPLETION)
			trl_errf(err, ROW_BAD,
			         "%s:%d: column '%s' is missing (the first row is "
			         "prompt-completion: prompt, completion)",
			         L->path, line, name);
		else
			trl_errf(
			    err, ROW_BAD,
			    "%s:%d: column '%s' is missing (the first row is language "
			    "modeling: %s)",
			    L->path, line, name, L->opt->text_field);
		return NULL;
	}
	if (v->type != JSON_STRING) {
		trl_errf(err, ROW_BAD, "%s:%d: column '%s' must be a string, got %s",
		         L->path, line, name, json_type_name(v->type));
		return NULL;
	}
	return v;
}

/* Loads one non-blank line: 0, ROW_BAD (message in err) or a negative code. */
static int load_row(Loader *L, const char *text, size_t len, int line, int col_shift,
                    TrlErr *err)
{
	JsonValue *row = NULL;
	JsonError je;
	int rc = json_parse(text, len, &row, &je);
	if (rc == TRL_ENOMEM)
		return trl_errf(err, rc, "%s:%d: out of memory", L->path, line);
	if (rc < 0)
		return trl_errf(err, ROW_BAD, "%s:%d: invalid JSON at column %d: %s",
		                L->path, line, je.column + col_shift, je.msg);
	if (row->type != JSON_OBJECT) {
		rc = trl_errf(err, ROW_BAD, "%s:%d: a row must be a JSON object, got %s",
		              L->path, line, json_type_name(row->type));
		goto done;
	}
	if (!L->have_format) {
		if ((rc = detect_format(L, row, line, err)) != 0)
			goto done;
		L->have_format = 1;
	}
	const JsonValue *prompt = NULL, *text_v = NULL;
	if (L->d->format == TRL_FMT_PROMPT_COMPLETION) {
		if (!(prompt = string_column(L, row, "prompt", line, err)) ||
		    !(text_v = string_column(L, row, "completion", line, err))) {
			rc = ROW_BAD;
			goto done;
		}
	} else if (!(text_v = string_column(L, row, L->opt->text_field, line, err))) {
		rc = ROW_BAD;
		goto done;
	}
	rc = add_example(L, prompt, text_v, line, err);
done:
	json_free(row);
	return rc;
}

static int is_blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return 0;
	return 1;
}

int dataset_load_jsonl(Dataset *d, const char *path, const DatasetOptions *opt,
                       const Tokenizer *tok, TrlErr *err)
{
	memset(d, 0, sizeof *d);
	char *buf = NULL;
	size_t size = 0;
	int rc = trl_read_file(path, &buf, &size, err);
	if (rc < 0)
		return rc;
	Loader L = {.d = d, .path = path, .opt = opt, .tok = tok};
	if (grow_pools(&L, 1) < 0) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory loading %s", path);
		goto fail;
	}
	TrlErr first_skip = {0};
	size_t pos = 0;
	int col_shift = 0;
	/* A UTF-8 byte order mark is not part of the first row. */
	if (size >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
		pos = 3;
		col_shift = 3;
	}
	for (int line = 1; pos < size; line++) {
		const char *s = buf + pos;
		const char *nl = memchr(s, '\n', size - pos);
		size_t n = nl ? (size_t)(nl - s) : size - pos;
		pos += n + 1;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (!is_blank(s, n)) {
			TrlErr row_err;
			rc =
			    load_row(&L, s, n, line, line == 1 ? col_shift : 0, &row_err);
			if (rc < 0 || (rc == ROW_BAD && !opt->skip_invalid_rows)) {
				trl_errf(err, rc < 0 ? rc : TRL_EINVAL, "%s",
				         row_err.msg);
				rc = rc < 0 ? rc : TRL_EINVAL;
				goto fail;
			}
			if (rc == ROW_BAD) {
				if (d->n_skipped++ == 0)
					first_skip = row_err;
			}
		}
		if (!nl)
			break;
	}
	if (d->n == 0) {
		if (d->n_skipped > 0)
			rc = trl_errf(
			    err, TRL_EINVAL,
			    "%s: no valid rows: all %d were skipped as invalid (the "
			    "first: %s)",
			    path, d->n_skipped, first_skip.msg);
		else
			rc = trl_errf(err, TRL_EINVAL, "%s: no rows", path);
		goto fail;
	}
	size_t off = 0;
	for (int i = 0; i < d->n; i++) {
		d->ex[i].ids = d->id_pool + off;
		d->ex[i].mask = d->mask_pool + off;
		off += (size_t)d->ex[i].len;
	}
	trl_free(buf);
	return 0;
fail:
	trl_free(buf);
	dataset_free(d);
	return rc;
}

void dataset_free(Dataset *d)
{
	free(d->ex);
	free(d->id_pool);
	free(d->mask_pool);
	memset(d, 0, sizeof *d);
}

int rows_unpacked(RowSet *rs, const Dataset *d, TrlErr *err)
{
	memset(rs, 0, sizeof *rs);
	rs->rows = malloc((size_t)(d->n > 0 ? d->n : 1) * sizeof *rs->rows);
	rs->items = malloc((size_t)(d->n > 0 ? d->n : 1) * sizeof *rs->items);
	if (!rs->rows || !rs->items) {
		rows_free(rs);
		return trl_errf(err, TRL_ENOMEM, "out of memory building %d rows", d->n);
	}
	for (int i = 0; i < d->n; i++) {
		rs->rows[i] = (Row){.first = i, .count = 1, .len = d->ex[i].len};
		rs->items[i] = i;
	}
	rs->n = d->n;
	return 0;
}

/* A set of integers in [0, n) with "smallest member >= i" in O(log64 n): level 0
 * has one bit per integer, and bit k of level l+1 says whether word k of level l
 * is non-zero. The top level is a single word. */
typedef struct BitTree {
	int levels;
	uint64_t *lv[7];
	size_t nwords[7];
} BitTree;

static int bittree_init(BitTree *b, size_t n)
{
	memset(b, 0, sizeof *b);
	size_t bits = n ? n : 1;
	do {
		size_t words = (bits + 63) / 64;
		b->lv[b->levels] = calloc(words, sizeof(uint64_t));
		if (!b->lv[b->levels])
			return -1;
		b->nwords[b->levels++] = words;
		bits = words;
	} while (bits > 1);
	return 0;
}

static void bittree_free(BitTree *b)
{
	for (int l = 0; l < b->levels; l++)
		free(b->lv[l]);
	memset(b, 0, sizeof *b);
}

static void bittree_set(BitTree *b, size_t i)
{
	for (int l = 0; l < b->levels; l++) {
		b->lv[l][i >> 6] |= 1ULL << (i & 63);
		i >>= 6;
	}
}

static void bittree_clear(BitTree *b, size_t i)
{
	for (int l = 0; l < b->levels; l++) {
		b->lv[l][i >> 6] &= ~(1ULL << (i & 63));
		if (b->lv[l][i >> 6])
			break;
		i >>= 6;
	}
}

/* The smallest member >= i at level l, or -1. */
static long bittree_next(const BitTree *b, int l, size_t i)
{
	size_t w = i >> 6;
	if (w >= b->nwords[l])
		return -1;
	uint64_t m = b->lv[l][w] & (~0ULL << (i & 63));
	if (m)
		return (long)(w * 64 + (size_t)__builtin_ctzll(m));
	if (l + 1 >= b->levels)
		return -1;
	long wn = bittree_next(b, l + 1, w + 1);
	if (wn < 0)
		return -1;
	return wn * 64 + __builtin_ctzll(b->lv[l][wn]);
}

/* Best-fit decreasing, as TRL's pack_dataset(strategy="bfd"): examples in order of
 * decreasing length (ties by index), each into the open bin with the least
 * remaining space that still fits it, else a new bin. Bins with equal space are
 * used first-in first-out, and rows come out in the order bins were opened. */
int rows_pack_bfd(RowSet *rs, const Dataset *d, int max_length, TrlErr *err)
{
	memset(rs, 0, sizeof *rs);
	int n = d->n;
	if (max_length <= 0)
		return trl_errf(err, TRL_EINVAL, "packing needs max_length > 0, got %d",
		                max_length);
	for (int i = 0; i < n; i++)
		if (d->ex[i].len > max_length)
			return trl_errf(
			    err, TRL_EINVAL,
			    "example %d (line %d) has %d tokens, more than the "
			    "packing length %d",
			    i, d->ex[i].line, d->ex[i].len, max_length);
	size_t nn = (size_t)(n > 0 ? n : 1);
	size_t nc = (size_t)max_length + 1;
	int *order = malloc(nn * sizeof *order);
	int *bin_of = malloc(nn * sizeof *bin_of);
	int *count = calloc(nc + 1, sizeof *count);
	int *space = malloc(nn * sizeof *space); /* per bin */
	int *next = malloc(nn * sizeof *next);   /* per bin: FIFO link */
	int *head = malloc(nc * sizeof *head);   /* per remaining space */
	int *tail = malloc(nc * sizeof *tail);
	BitTree bt;
	int bt_ok = bittree_init(&bt, nc) == 0;
	rs->items = malloc(nn * sizeof *rs->items);
	int rc = 0;
	if (!order || !bin_of || !count || !space || !next || !head || !tail || !bt_ok ||
	    !rs->items) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory packing %d examples", n);
		goto done;
	}
	/* Counting sort by decreasing length; stable, so ties keep index order. */
	for (int i = 0; i < n; i++)
		count[max_length - d->ex[i].len]++;
	for (size_t k = 0, sum = 0; k <= nc; k++) {
		int c = count[k];
		count[k] = (int)sum;
		sum += (size_t)c;
	}
	for (int i = 0; i < n; i++)
		order[count[max_length - d->ex[i].len]++] = i;
	for (size_t k = 0; k < nc; k++)
		head[k] = tail[k] = -1;
	int nbins = 0;
	for (int k = 0; k < n; k++) {
		int e = order[k], len = d->ex[e].len;
		long s = bittree_next(&bt, 0, (size_t)len);
		int b;
		if (s >= 0) {
			b = head[s];
			head[s] = next[b];
			if (head[s] < 0) {
				tail[s] = -1;
				bittree_clear(&bt, (size_t)s);
			}
		} else {
			b = nbins++;
			space[b] = max_length;
		}
		bin_of[e] = b;
		space[b] -= len;
		if (space[b] > 0) {
			int r = space[b];
			next[b] = -1;
			if (tail[r] >= 0)
				next[tail[r]] = b;
			else
				head[r] = b;
			tail[r] = b;
			bittree_set(&bt, (size_t)r);
		}
	}
	rs->rows = calloc((size_t)(nbins > 0 ? nbins : 1), sizeof *rs->rows);
	if (!rs->rows) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory packing %d examples", n);
		goto done;
	}
	for (int e = 0; e < n; e++) {
		rs->rows[bin_of[e]].count++;
		rs->rows[bin_of[e]].len += d->ex[e].len;
	}
	for (int b = 0, first = 0; b < nbins; b++) {
		rs->rows[b].first = first;
		first += rs->rows[b].count;
		rs->rows[b].count = 0;
	}
	/* Within a row, examples keep the order they were placed in. */
	for (int k = 0; k < n; k++) {
		Row *r = &rs->rows[bin_of[order[k]]];
		rs->items[r->first + r->count++] = order[k];
	}
	rs->n = nbins;
done:
	free(order);
	free(bin_of);
	free(count);
	free(space);
	free(next);
	free(head);
	free(tail);
	bittree_free(&bt);
	if (rc < 0)
		rows_free(rs);
	return rc;
}

void rows_free(RowSet *rs)
{
	free(rs->rows);
	free(rs->items);
	memset(rs, 0, sizeof *rs);
}

int rows_max_len(const RowSet *rs)
{
	int m = 0;
	for (int i = 0; i < rs->n; i++)
		if (rs->rows[i].len > m)
			m = rs->rows[i].len;
	return m;
}

/* Padding positions get position 0, so they stay valid ids for any position
 * table; they carry no target, and doc -1 keeps attention from mixing them in. */
long batch_fill(Batch *b, const Dataset *d, const RowSet *rs, const int *idx, int nrows,
                int pad_id)
{
	int T = 0;
	for (int r = 0; r < nrows; r++)
		if (rs->rows[idx[r]].len > T)
			T = rs->rows[idx[r]].len;
	b->B = nrows;
	b->T = T;
	long ntarget = 0;
	for (int r = 0; r < nrows; r++) {
		const Row *row = &rs->rows[idx[r]];
		size_t base = (size_t)r * (size_t)T;
		int t = 0;
		for (int k = 0; k < row->count; k++) {
			const Example *e = &d->ex[rs->items[row->first + k]];
			for (int j = 0; j < e->len; j++, t++) {
				b->ids[base + t] = e->ids[j];
				b->pos[base + t] = j;
				b->doc[base + t] = k;
				if (j + 1 < e->len && e->mask[j + 1]) {
					b->targets[base + t] = e->ids[j + 1];
					ntarget++;
				} else {
					b->targets[base + t] = -1;
				}
			}
		}
		for (; t < T; t++) {
			b->ids[base + t] = pad_id;
			b->pos[base + t] = 0;
			b->doc[base + t] = -1;
			b->targets[base + t] = -1;
		}
	}
	return ntarget;
}

void sampler_permutation(int *perm, int n, uint64_t seed, long epoch)
{
	Rng r;
	rng_seed(&r, (seed * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)epoch + 1));
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)rng_below(&r, (uint64_t)i + 1);
		int tmp = perm[i];
		perm[i] = perm[j];
		perm[j] = tmp;
	}
}
