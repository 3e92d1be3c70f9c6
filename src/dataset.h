/* dataset.h - JSONL datasets in TRL's formats -> tokenized examples with loss
 * masks; packing; the deterministic sampler; filling micro-batches.
 *
 * Formats (standard form, detected from the columns of the first row):
 *   language modeling  {"text": "..."}   (column name from dataset_text_field)
 *   prompt-completion  {"prompt": "...", "completion": "..."}
 * EOS is appended to text and to completions, as TRL does. Other columns are
 * ignored here. A malformed row is an error naming file:line and the problem,
 * or with skip_invalid_rows it is skipped and counted.
 *
 * Example tokens: ids[0..len); mask[t] = 1 when token t is a loss target (it is
 * predicted from the tokens before it). prompt_len = number of prompt tokens
 * (0 for language-modeling rows).
 */
#ifndef TRL_DATASET_H
#define TRL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tokenizer.h"
#include "trl.h"

typedef enum { TRL_FMT_LANGUAGE_MODELING = 0, TRL_FMT_PROMPT_COMPLETION } TrlDataFormat;

typedef struct DatasetOptions {
	const char *text_field;   /* "text" */
	int max_length;           /* truncate examples to this many tokens; <= 0: never */
	int keep_end;             /* truncation_mode: 0 keep_start, 1 keep_end */
	int completion_only_loss; /* -1 None (= on for prompt-completion), 0, 1 */
	int skip_invalid_rows;
} DatasetOptions;

typedef struct Example {
	int32_t *ids;  /* (len) into the dataset's pool */
	uint8_t *mask; /* (len) */
	int len;
	int prompt_len;
	int line; /* 1-based line in the JSONL file */
} Example;

typedef struct Dataset {
	TrlDataFormat format;
	Example *ex;
	int n;
	int n_skipped;   /* rows skipped with skip_invalid_rows */
	int n_truncated; /* examples cut to max_length */
	long n_tokens;
	int32_t *id_pool;
	uint8_t *mask_pool;
} Dataset;

/* Loads and tokenizes a JSONL file. dataset_free is safe on a zeroed struct. */
int dataset_load_jsonl(Dataset *d, const char *path, const DatasetOptions *opt,
                       const Tokenizer *tok, TrlErr *err);
void dataset_free(Dataset *d);

/* A training row: one example, or several packed into max_length tokens. */
typedef struct Row {
	int first; /* index into RowSet.items */
	int count; /* examples in this row */
	int len;   /* total tokens */
} Row;

typedef struct RowSet {
	Row *rows;
	int n;
	int *items; /* example indices, rows[i].first .. first+count-1 */
} RowSet;

/* One row per example (no packing). */
int rows_unpacked(RowSet *rs, const Dataset *d, TrlErr *err);
/* Best-fit decreasing packing into rows of at most max_length tokens
 * (examples were already truncated to max_length). Deterministic. */
int rows_pack_bfd(RowSet *rs, const Dataset *d, int max_length, TrlErr *err);
void rows_free(RowSet *rs);

/* Fills b with rows[idx[0..nrows)] padded to T = the longest of them:
 * ids, positions (reset per example), doc ids (-1 padding), targets
 * (targets[t] = ids[t+1] where mask[t+1] and t+1 is in the same example,
 * else -1). pad_id fills padding. Returns the number of target tokens. */
long batch_fill(Batch *b, const Dataset *d, const RowSet *rs, const int *idx, int nrows,
                int pad_id);

/* Longest row, for allocating activations. */
int rows_max_len(const RowSet *rs);

/* The deterministic sampler: the permutation of [0, n) used in epoch `epoch`
 * for seed `seed` (Fisher-Yates on an Rng seeded from (seed, epoch)), so any
 * position (epoch, index) can be recomputed on resume. */
void sampler_permutation(int *perm, int n, uint64_t seed, long epoch);

#endif
