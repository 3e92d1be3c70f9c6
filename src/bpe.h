/* bpe.h - byte-pair-encoding model for tokenizer_hf.c: vocabulary, merges, word cache.
 *
 * Usage: bpe_init(b, n_ids); bpe_set_token() for every vocabulary entry and added
 * token; bpe_add_merge() in rank order; bpe_finish(); then bpe_encode_word() per
 * pre-tokenized word, from any number of threads (the word cache is locked).
 * bpe_free() releases everything bpe_init and later calls allocated and is safe on a
 * zeroed struct. Functions that can fail return 0 or a negative TRL_E* code.
 */
#ifndef TRL_BPE_H
#define TRL_BPE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "trl.h"

/* A growable array of ids; zero-initialise, release with free(v->p). */
typedef struct IdVec {
	int32_t *p;
	size_t n, cap;
} IdVec;

int idvec_push(IdVec *v, int32_t id);

typedef struct BpeCache BpeCache;

typedef struct Bpe {
	int32_t n_ids; /* ids are 0 .. n_ids-1; some may have no token */
	char *pool;    /* token strings, back to back */
	size_t pool_len, pool_cap;
	uint32_t *tok_off; /* (n_ids) offset in pool, UINT32_MAX: no token */
	uint32_t *tok_len; /* (n_ids) */
	uint32_t *vtab;    /* string -> id table: id + 1, 0 empty */
	uint32_t vmask;
	uint64_t *mkey; /* merges: (left << 32 | right) + 1, 0 empty */
	uint32_t *mrank;
	int32_t *mnew;
	uint32_t mmask, n_merges;
	int byte_level;    /* words are raw bytes mapped through the GPT-2 byte table */
	int byte_fallback; /* unknown characters become <0xXX> tokens */
	int ignore_merges; /* a word found whole in the vocabulary is one token */
	int fuse_unk;      /* consecutive unknown characters give one unk */
	int32_t unk_id;    /* -1: none, unknown characters are dropped */
	int32_t byte_sym[256]; /* byte_level: id of the character byte b maps to */
	int32_t fb_id[256];    /* byte_fallback: id of <0xXX>, -1 if absent */
	BpeCache *cache;
	pthread_mutex_t lock;
	int lock_ok;
} Bpe;

/* The character the GPT-2 byte-level alphabet uses for byte b, as UTF-8 in out
 * (2 bytes at most); returns its length. */
int bpe_byte_char(unsigned b, char out[2]);
/* The byte a byte-level character (code point) stands for, or -1. */
int bpe_char_byte(uint32_t cp);

int bpe_init(Bpe *b, int32_t n_ids, TrlErr *err);
/* Sets the string of id (replacing any earlier string of that id) and maps the
 * string to id (replacing any earlier id of that string, as added tokens do). */
int bpe_set_token(Bpe *b, int32_t id, const char *s, size_t len, TrlErr *err);
/* The id of s, or -1. */
int32_t bpe_lookup(const Bpe *b, const char *s, size_t len);
/* The string of id (not NUL-terminated) and its length, or NULL. */
const char *bpe_token(const Bpe *b, int32_t id, size_t *len);
/* Adds the merge left + right with the given rank; a later merge of the same pair
 * replaces an earlier one, as in the reference. */
int bpe_add_merge(Bpe *b, const char *l, size_t ll, const char *r, size_t rl,
                  uint32_t rank, TrlErr *err);
int bpe_finish(Bpe *b, TrlErr *err);
/* Appends the ids of one word (w[0..n), valid UTF-8 unless byte_level) to out. */
int bpe_encode_word(Bpe *b, const char *w, size_t n, IdVec *out);
/* The same without the cache: the plain merge loop, for tests and benchmarks. */
int bpe_encode_word_nocache(const Bpe *b, const char *w, size_t n, IdVec *out);
void bpe_free(Bpe *b);

#endif
