/* bpe.c - the BPE model: vocabulary and merge hash maps, the merge loop, a word cache. */
#include "bpe.h"

#include <stdlib.h>
#include <string.h>

/* Words longer than this are encoded without the cache, as in the reference. */
#define BPE_CACHE_MAX_WORD 256
#define BPE_CACHE_SLOTS (1u << 16)
#define BPE_CACHE_MAX_ENTS (BPE_CACHE_SLOTS / 2)

typedef struct CacheEnt {
	uint64_t h;
	uint32_t koff, klen, ioff, nids;
} CacheEnt;

struct BpeCache {
	uint32_t tab[BPE_CACHE_SLOTS]; /* index + 1 into ents, 0 empty */
	CacheEnt ents[BPE_CACHE_MAX_ENTS];
	uint32_t n_ents;
	char *keys;
	size_t klen, kcap;
	int32_t *ids;
	size_t ilen, icap;
};

int idvec_push(IdVec *v, int32_t id)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 64;
		int32_t *p = realloc(v->p, cap * sizeof *p);
		if (!p)
			return TRL_ENOMEM;
		v->p = p;
		v->cap = cap;
	}
	v->p[v->n++] = id;
	return 0;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0x100000001b3ull);
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, s, 8);
		h = (h ^ v) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	uint64_t v = 0;
	memcpy(&v, s, n);
	h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	h *= 0x9E3779B97F4A7C15ull;
	return h ^ (h >> 32);
}

static uint64_t hash_pair(uint64_t key)
{
	key *= 0x9E3779B97F4A7C15ull;
	return key ^ (key >> 29);
}

/* The GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves, the
 * others are shifted to U+0100 onwards in byte order. */
static int byte_is_printable(unsigned b)
{
	return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

static uint32_t byte_to_cp(unsigned b)
{
	if (byte_is_printable(b))
		return b;
	uint32_t n = 0;
	for (unsigned i = 0; i < b; i++)
		n += !byte_is_printable(i);
	return 256 + n;
}

int bpe_byte_char(unsigned b, char out[2])
{
	uint32_t cp = byte_to_cp(b & 0xFF);
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	out[0] = (char)(0xC0 | (cp >> 6));
	out[1] = (char)(0x80 | (cp & 0x3F));
	return 2;
}

int bpe_char_byte(uint32_t cp)
{
	if (cp < 256)
		return byte_is_printable(cp) ? (int)cp : -1;
	if (cp >= 256 + 68)
		return -1;
	uint32_t n = cp - 256;
	for (unsigned b = 0; b < 256; b++)
		if (!byte_is_printable(b) && n-- == 0)
			return (int)b;
	return -1;
}

int bpe_init(Bpe *b, int32_t n_ids, TrlErr *err)
{
	memset(b, 0, sizeof *b);
	b->unk_id = -1;
	b->n_ids = n_ids;
	uint32_t slots = 1024;
	while (slots < 2u * (uint32_t)n_ids)
		slots *= 2;
	b->vmask = slots - 1;
	b->tok_off = malloc((size_t)n_ids * sizeof *b->tok_off);
	b->tok_len = calloc((size_t)n_ids, sizeof *b->tok_len);
	b->vtab = calloc(slots, sizeof *b->vtab);
	b->cache = calloc(1, sizeof *b->cache);
	if (!b->tok_off || !b->tok_len || !b->vtab || !b->cache) {
		bpe_free(b);
		return trl_errf(err, TRL_ENOMEM,
		                "out of memory for a vocabulary of %d tokens",
		                (int)n_ids);
	}
	memset(b->tok_off, 0xFF, (size_t)n_ids * sizeof *b->tok_off);
	if (pthread_mutex_init(&b->lock, NULL) != 0) {
		bpe_free(b);
		return trl_errf(err, TRL_EINTERNAL, "pthread_mutex_init failed");
	}
	b->lock_ok = 1;
	return 0;
}

const char *bpe_token(const Bpe *b, int32_t id, size_t *len)
{
	if (id < 0 || id >= b->n_ids || b->tok_off[id] == UINT32_MAX)
		return NULL;
	*len = b->tok_len[id];
	return b->pool + b->tok_off[id];
}

int32_t bpe_lookup(const Bpe *b, const char *s, size_t len)
{
	uint32_t i = (uint32_t)hash_bytes(s, len) & b->vmask;
	for (;; i = (i + 1) & b->vmask) {
		uint32_t e = b->vtab[i];
		if (!e)
			return -1;
		int32_t id = (int32_t)(e - 1);
		if (b->tok_len[id] == len &&
		    memcmp(b->pool + b->tok_off[id], s, len) == 0)
			return id;
	}
}

int bpe_set_token(Bpe *b, int32_t id, const char *s, size_t len, TrlErr *err)
{
	if (id < 0 || id >= b->n_ids)
		return trl_errf(err, TRL_EINTERNAL, "token id %d out of range", (int)id);
	if (b->pool_len + len + 1 > b->pool_cap) {
		size_t cap = b->pool_cap ? b->pool_cap : 1 << 20;
		while (cap < b->pool_len + len + 1)
			cap *= 2;
		if (cap > UINT32_MAX)
			return trl_errf(err, TRL_EFORMAT,
			                "vocabulary strings exceed 4 GiB");
		char *p = realloc(b->pool, cap);
		if (!p)
			return trl_errf(err, TRL_ENOMEM,
			                "out of memory for vocabulary strings");
		b->pool = p;
		b->pool_cap = cap;
	}
	if (b->tok_off[id] != UINT32_MAX && b->tok_len[id] == len &&
	    memcmp(b->pool + b->tok_off[id], s, len) == 0 && bpe_lookup(b, s, len) == id)
		return 0;
	uint32_t off = (uint32_t)b->pool_len;
	memcpy(b->pool + off, s, len);
	b->pool[off + len] = 0;
	b->pool_len += len + 1;
	/* An id that already had a string leaves a stale table entry pointing at it;
	 * the entry compares against the new string, so it keeps working only if the
	 * string is the same. Remove it first. */
	if (b->tok_off[id] != UINT32_MAX) {
		for (uint32_t i = 0; i <= b->vmask; i++)
			if (b->vtab[i] == (uint32_t)id + 1) {
				/* Re-insert the following cluster to keep probing
				 * correct. */
				b->vtab[i] = 0;
				for (uint32_t j = (i + 1) & b->vmask; b->vtab[j];
				     j = (j + 1) & b->vmask) {
					uint32_t e = b->vtab[j];
					b->vtab[j] = 0;
					uint32_t k = (uint32_t)hash_bytes(
					                 b->pool + b->tok_off[e - 1],
					                 b->tok_len[e - 1]) &
					             b->vmask;
					while (b->vtab[k])
						k = (k + 1) & b->vmask;
					b->vtab[k] = e;
				}
				break;
			}
	}
	b->tok_off[id] = off;
	b->tok_len[id] = (uint32_t)len;
	uint32_t i = (uint32_t)hash_bytes(s, len) & b->vmask;
	for (;; i = (i + 1) & b->vmask) {
		uint32_t e = b->vtab[i];
		if (!e) {
			b->vtab[i] = (uint32_t)id + 1;
			return 0;
		}
		int32_t other = (int32_t)(e - 1);
		if (other == id || (b->tok_len[other] == len &&
		                    memcmp(b->pool + b->tok_off[other], s, len) == 0)) {
			b->vtab[i] = (uint32_t)id + 1;
			return 0;
		}
	}
}

int bpe_add_merge(Bpe *b, const char *l, size_t ll, const char *r, size_t rl,
                  uint32_t rank, TrlErr *err)
{
	int32_t lid = bpe_lookup(b, l, ll), rid = bpe_lookup(b, r, rl);
	if (lid < 0 || rid < 0)
		return trl_errf(
		    err, TRL_EFORMAT,
		    "merge %u ('%.*s' '%.*s') uses a token that is not in the "
		    "vocabulary",
		    rank, (int)ll, l, (int)rl, r);
	char stack[256], *buf = ll + rl <= sizeof stack ? stack : malloc(ll + rl);
	if (!buf)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	memcpy(buf, l, ll);
	memcpy(buf + ll, r, rl);
	int32_t nid = bpe_lookup(b, buf, ll + rl);
	if (buf != stack)
		free(buf);
	if (nid < 0)
		return trl_errf(
		    err, TRL_EFORMAT,
		    "merge %u ('%.*s' '%.*s') makes a token that is not in the "
		    "vocabulary",
		    rank, (int)ll, l, (int)rl, r);
	if (2 * (b->n_merges + 1) > b->mmask) {
		uint32_t slots = b->mmask ? 2 * (b->mmask + 1) : 1u << 16;
		uint64_t *key = calloc(slots, sizeof *key);
		uint32_t *mrank = malloc(slots * sizeof *mrank);
		int32_t *mnew = malloc(slots * sizeof *mnew);
		if (!key || !mrank || !mnew) {
			free(key);
			free(mrank);
			free(mnew);
			return trl_errf(err, TRL_ENOMEM, "out of memory for merges");
		}
		for (uint32_t i = 0; b->mkey && i <= b->mmask; i++) {
			if (!b->mkey[i])
				continue;
			uint32_t j = (uint32_t)hash_pair(b->mkey[i] - 1) & (slots - 1);
			while (key[j])
				j = (j + 1) & (slots - 1);
			key[j] = b->mkey[i];
			mrank[j] = b->mrank[i];
			mnew[j] = b->mnew[i];
		}
		free(b->mkey);
		free(b->mrank);
		free(b->mnew);
		b->mkey = key;
		b->mrank = mrank;
		b->mnew = mnew;
		b->mmask = slots - 1;
	}
	uint64_t k = ((uint64_t)(uint32_t)lid << 32) | (uint32_t)rid;
	uint32_t j = (uint32_t)hash_pair(k) & b->mmask;
	while (b->mkey[j] && b->mkey[j] != k + 1)
		j = (j + 1) & b->mmask;
	if (!b->mkey[j])
		b->n_merges++;
	b->mkey[j] = k + 1;
	b->mrank[j] = rank;
	b->mnew[j] = nid;
	return 0;
}

/* The rank and result of merging left and right; 0 when they do not merge. */
static inline int merge_find(const Bpe *b, int32_t left, int32_t right, uint32_t *rank,
                             int32_t *nid)
{
	if (left < 0 || right < 0 || !b->mkey)
		return 0;
	uint64_t k = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
	uint32_t j = (uint32_t)hash_pair(k) & b->mmask;
	for (;; j = (j + 1) & b->mmask) {
		if (!b->mkey[j])
			return 0;
		if (b->mkey[j] == k + 1) {
			*rank = b->mrank[j];
			*nid = b->mnew[j];
			return 1;
		}
	}
}

int bpe_finish(Bpe *b, TrlErr *err)
{
	(void)err;
	for (unsigned i = 0; i < 256; i++) {
		char c[2], hex[8];
		int n = bpe_byte_char(i, c);
		b->byte_sym[i] = bpe_lookup(b, c, (size_t)n);
		static const char digits[] = "0123456789ABCDEF";
		memcpy(hex, "<0x", 3);
		hex[3] = digits[i >> 4];
		hex[4] = digits[i & 15];
		hex[5] = '>';
		b->fb_id[i] = bpe_lookup(b, hex, 6);
	}
	return 0;
}

static size_t utf8_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if (c >= 0xF0)
		return 4;
	if (c >= 0xE0)
		return 3;
	return 2;
}

typedef struct Sym {
	int32_t id, prev, next;
	uint32_t start, len; /* bytes of the word this symbol covers */
} Sym;

typedef struct Cand {
	uint32_t rank;
	int32_t left, right, lid, rid, nid;
} Cand;

static inline int cand_less(const Cand *a, const Cand *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(Cand *h, size_t *n, Cand c)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!cand_less(&c, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = c;
}

static Cand heap_pop(Cand *h, size_t *n)
{
	Cand top = h[0], last = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		const Cand *best = &last;
		if (l < *n && cand_less(&h[l], best)) {
			m = l;
			best = &h[l];
		}
		if (l + 1 < *n && cand_less(&h[l + 1], best))
			m = l + 1;
		if (m == i)
			break;
		h[i] = h[m];
		i = m;
	}
	if (*n > 0)
		h[i] = last;
	return top;
}

static void push_pair(const Bpe *b, const Sym *s, int32_t left, Cand *h, size_t *nh)
{
	int32_t right = s[left].next;
	Cand c;
	if (right < 0 || !merge_find(b, s[left].id, s[right].id, &c.rank, &c.nid))
		return;
	c.left = left;
	c.right = right;
	c.lid = s[left].id;
	c.rid = s[right].id;
	heap_push(h, nh, c);
}

/* Emits the ids for an unknown piece w[0..n): byte fallback when every byte has a
 * token, else unk (fused with a preceding unk when fuse_unk), else nothing. */
static int emit_unknown(const Bpe *b, const char *w, size_t n, IdVec *out, int *last_unk)
{
	if (b->byte_fallback) {
		size_t i;
		for (i = 0; i < n && b->fb_id[(unsigned char)w[i]] >= 0; i++)
			;
		if (i == n) {
			for (i = 0; i < n; i++)
				if (idvec_push(out, b->fb_id[(unsigned char)w[i]]) < 0)
					return TRL_ENOMEM;
			*last_unk = 0;
			return 0;
		}
	}
	if (b->unk_id < 0)
		return 0;
	if (b->fuse_unk && *last_unk)
		return 0;
	*last_unk = 1;
	return idvec_push(out, b->unk_id);
}

int bpe_encode_word_nocache(const Bpe *b, const char *w, size_t n, IdVec *out)
{
	if (n == 0)
		return 0;
	if (b->ignore_merges) {
		int32_t id;
		if (b->byte_level) {
			char stack[512] = {0},
			     *m = 2 * n <= sizeof stack ? stack : calloc(2, n);
			if (!m)
				return TRL_ENOMEM;
			size_t ml = 0;
			for (size_t i = 0; i < n; i++)
				ml += (size_t)bpe_byte_char((unsigned char)w[i], m + ml);
			id = bpe_lookup(b, m, ml);
			if (m != stack)
				free(m);
		} else {
			id = bpe_lookup(b, w, n);
		}
		if (id >= 0)
			return idvec_push(out, id);
	}
	Sym sstack[64];
	Cand hstack[192];
	Sym *s = sstack;
	Cand *h = hstack;
	if (n > 64) {
		s = malloc(n * sizeof *s);
		h = malloc(3 * n * sizeof *h);
		if (!s || !h) {
			free(s);
			free(h);
			return TRL_ENOMEM;
		}
	}
	int32_t ns = 0;
	for (size_t i = 0; i < n;) {
		size_t cl = b->byte_level ? 1 : utf8_len((unsigned char)w[i]);
		if (i + cl > n)
			cl = n - i;
		s[ns].id = b->byte_level ? b->byte_sym[(unsigned char)w[i]]
		                         : bpe_lookup(b, w + i, cl);
		s[ns].prev = ns - 1;
		s[ns].next = -1;
		if (ns > 0)
			s[ns - 1].next = ns;
		s[ns].start = (uint32_t)i;
		s[ns].len = (uint32_t)cl;
		ns++;
		i += cl;
	}
	size_t nh = 0;
	for (int32_t i = 0; i + 1 < ns; i++)
		push_pair(b, s, i, h, &nh);
	while (nh > 0) {
		Cand c = heap_pop(h, &nh);
		Sym *l = &s[c.left];
		/* A candidate is stale when either side has merged since it was queued.
		 */
		if (l->len == 0 || l->id != c.lid || l->next != c.right ||
		    s[c.right].id != c.rid)
			continue;
		Sym *r = &s[c.right];
		l->id = c.nid;
		l->len += r->len;
		l->next = r->next;
		if (r->next >= 0)
			s[r->next].prev = c.left;
		r->len = 0;
		r->id = -2;
		if (l->prev >= 0)
			push_pair(b, s, l->prev, h, &nh);
		push_pair(b, s, c.left, h, &nh);
	}
	int rc = 0, last_unk = 0;
	for (int32_t i = 0; i >= 0 && rc == 0; i = s[i].next) {
		if (s[i].id >= 0) {
			rc = idvec_push(out, s[i].id);
			last_unk = 0;
		} else {
			rc = emit_unknown(b, w + s[i].start, s[i].len, out, &last_unk);
		}
	}
	if (s != sstack) {
		free(s);
		free(h);
	}
	return rc;
}

static void cache_clear(BpeCache *c)
{
	memset(c->tab, 0, sizeof c->tab);
	c->n_ents = 0;
	c->klen = 0;
	c->ilen = 0;
}

/* Looks w up under the lock and appends its ids; returns 1 when found. */
static int cache_get(Bpe *b, uint64_t h, const char *w, size_t n, IdVec *out)
{
	BpeCache *c = b->cache;
	int found = 0;
	pthread_mutex_lock(&b->lock);
	for (uint32_t i = (uint32_t)h & (BPE_CACHE_SLOTS - 1); c->tab[i];
	     i = (i + 1) & (BPE_CACHE_SLOTS - 1)) {
		const CacheEnt *e = &c->ents[c->tab[i] - 1];
		if (e->h == h && e->klen == n && memcmp(c->keys + e->koff, w, n) == 0) {
			found = 1;
			for (uint32_t k = 0; k < e->nids && found; k++)
				if (idvec_push(out, c->ids[e->ioff + k]) < 0)
					found = -1;
			break;
		}
	}
	pthread_mutex_unlock(&b->lock);
	return found;
}

static void cache_put(Bpe *b, uint64_t h, const char *w, size_t n, const int32_t *ids,
                      size_t nids)
{
	BpeCache *c = b->cache;
	pthread_mutex_lock(&b->lock);
	if (c->n_ents == BPE_CACHE_MAX_ENTS)
		cache_clear(c);
	if (c->klen + n > c->kcap) {
		size_t cap = c->kcap ? c->kcap : 1 << 20;
		while (cap < c->klen + n)
			cap *= 2;
		char *p = realloc(c->keys, cap);
		if (!p)
			goto out;
		c->keys = p;
		c->kcap = cap;
	}
	if (c->ilen + nids > c->icap) {
		size_t cap = c->icap ? c->icap : 1 << 18;
		while (cap < c->ilen + nids)
			cap *= 2;
		int32_t *p = realloc(c->ids, cap * sizeof *p);
		if (!p)
			goto out;
		c->ids = p;
		c->icap = cap;
	}
	uint32_t i = (uint32_t)h & (BPE_CACHE_SLOTS - 1);
	while (c->tab[i]) {
		const CacheEnt *e = &c->ents[c->tab[i] - 1];
		if (e->h == h && e->klen == n && memcmp(c->keys + e->koff, w, n) == 0)
			goto out; /* another thread put it first */
		i = (i + 1) & (BPE_CACHE_SLOTS - 1);
	}
	CacheEnt *e = &c->ents[c->n_ents];
	e->h = h;
	e->koff = (uint32_t)c->klen;
	e->klen = (uint32_t)n;
	e->ioff = (uint32_t)c->ilen;
	e->nids = (uint32_t)nids;
	memcpy(c->keys + c->klen, w, n);
	c->klen += n;
	memcpy(c->ids + c->ilen, ids, nids * sizeof *ids);
	c->ilen += nids;
	c->tab[i] = ++c->n_ents;
out:
	pthread_mutex_unlock(&b->lock);
}

int bpe_encode_word(Bpe *b, const char *w, size_t n, IdVec *out)
{
	if (n == 0)
		return 0;
	if (n >= BPE_CACHE_MAX_WORD)
		return bpe_encode_word_nocache(b, w, n, out);
	uint64_t h = hash_bytes(w, n);
	int found = cache_get(b, h, w, n, out);
	if (found)
		return found < 0 ? TRL_ENOMEM : 0;
	size_t before = out->n;
	int rc = bpe_encode_word_nocache(b, w, n, out);
	if (rc == 0)
		cache_put(b, h, w, n, out->p + before, out->n - before);
	return rc;
}

void bpe_free(Bpe *b)
{
	free(b->pool);
	free(b->tok_off);
	free(b->tok_len);
	free(b->vtab);
	free(b->mkey);
	free(b->mrank);
	free(b->mnew);
	if (b->cache) {
		free(b->cache->keys);
		free(b->cache->ids);
		free(b->cache);
	}
	if (b->lock_ok)
		pthread_mutex_destroy(&b->lock);
	memset(b, 0, sizeof *b);
	b->unk_id = -1;
}
