/* dataset.h - JSONL datasets in TRL's formats -> tokenized examples with loss
 * masks; packing; the deterministic sampler; filling micro-batches.
 *
 * Formats, each in a standard form (the columns hold strings) and a
 * conversational form (they hold lists of {"role", "content"} messages):
 *   language modeling    "text" (dataset_text_field) / "messages"
 *   prompt-only          "prompt"
 *   prompt-completion    "prompt", "completion"
 *   preference           "prompt", "chosen", "rejected"; or only "chosen" and
 *                        "rejected" (implicit prompt: their shared prefix, for
 *                        conversations the shared leading messages)
 *   unpaired preference  "prompt", "completion", "label" (a boolean)
 * The format and the form are detected from the columns of the first valid row
 * (in the order above from the bottom: chosen+rejected, then prompt+completion+
 * label, prompt+completion, prompt, text/messages), or forced with
 * DatasetOptions.format, in which case the forced format's columns must exist.
 * Other columns are kept per example as the JSON text of an object (extra), for
 * reward functions. A malformed row is an error naming file:line and the
 * problem, or with skip_invalid_rows it is skipped and counted.
 *
 * Conversational rows are rendered with the chat template (chat_template.h) as
 * TRL does: the prompt with add_generation_prompt, the completion (chosen,
 * rejected) as the rest of the rendering of prompt + completion, which must
 * start with the rendered prompt. The two texts are tokenized separately, so
 * prompt_len is exactly the prompt's tokens.
 *
 * EOS: appended to the completion (the text, chosen, rejected) of standard rows
 * as SFT, DPO and KTO do; for conversational rows only for preference and
 * unpaired preference (DPO and KTO add it; SFT relies on the template's
 * end-of-turn). Prompt-only rows get none.
 *
 * Example tokens: ids[0..len); mask[t] = 1 when token t is a loss target (it is
 * predicted from the tokens before it). prompt_len = number of prompt tokens
 * (0 for language-modeling rows); ids[0..prompt_len) is the prompt.
 *   language modeling    mask on every token but the first
 *   prompt-completion    mask on the completion (completion_only_loss null/true)
 *                        or every token but the first (false)
 *   prompt-only          ids is the prompt (ready for generation), mask all 0
 *   preference           ids = prompt + chosen, rejected_ids = prompt + rejected,
 *                        both masks on the completion only
 *   unpaired preference  ids = prompt + completion, mask on the completion,
 *                        label 1 (desirable) or 0
 * assistant_only_loss (conversational data only) further limits every mask to
 * the assistant spans chat_render reports (content + end-of-turn). To map byte
 * spans to tokens exactly, the rendered text is tokenized in pieces cut at the
 * span boundaries (and at the end of the prompt): every token then lies wholly
 * inside or outside a span. This equals TRL's return_assistant_tokens_mask for a
 * byte-level tokenizer; a BPE tokenizer could merge across a boundary when the
 * text is encoded whole, so the ids may differ from one-piece tokenization at
 * those boundaries (templates put special tokens there, which never merge).
 */
#ifndef TRL_DATASET_H
#define TRL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tokenizer.h"
#include "trl.h"

/* TRL_FMT_AUTO is only an option value (detect); a loaded Dataset has one of
 * the others. The order is the dataset_format key's choices. */
typedef enum {
	TRL_FMT_AUTO = 0,
	TRL_FMT_LANGUAGE_MODELING,
	TRL_FMT_PROMPT_ONLY,
	TRL_FMT_PROMPT_COMPLETION,
	TRL_FMT_PREFERENCE,
	TRL_FMT_UNPAIRED_PREFERENCE,
	TRL_FMT_COUNT
} TrlDataFormat;

typedef struct DatasetOptions {
	const char *text_field; /* "text" */
	int max_length; /* truncate each sequence to this many tokens; <= 0: never */
	int keep_end;   /* truncation_mode: 0 keep_start, 1 keep_end */
	int completion_only_loss; /* -1 None (= on for prompt-completion), 0, 1 */
	int skip_invalid_rows;
	TrlDataFormat format;      /* TRL_FMT_AUTO detects it from the first row */
	int assistant_only_loss;   /* loss only on assistant spans (conversational) */
	const char *chat_template; /* a built-in name or Jinja source; NULL/"" = chatml */
	const char *eos_token;     /* NULL/"": the tokenizer's EOS; else a token string */
} DatasetOptions;

typedef struct Example {
	int32_t *ids;  /* (len) into the dataset's pool */
	uint8_t *mask; /* (len) */
	int len;
	int prompt_len;
	int line; /* 1-based line in the JSONL file */
	/* Preference: prompt + rejected (+ EOS), with its own prompt_len (equal to
	 * prompt_len unless keep_end truncation cut the two differently). NULL and 0
	 * for other formats. */
	int32_t *rejected_ids;  /* (rejected_len) */
	uint8_t *rejected_mask; /* (rejected_len) */
	int rejected_len;
	int rejected_prompt_len;
	int label;         /* unpaired preference: 1 desirable, 0 undesirable; else -1 */
	const char *extra; /* JSON object of the columns the format did not read: "{}" */
	size_t off, rejected_off, extra_off; /* internal: pool offsets while loading */
} Example;

typedef struct Dataset {
	TrlDataFormat format;
	int conversational;  /* the columns held lists of messages */
	int implicit_prompt; /* preference without a prompt column */
	char columns[64];    /* the columns read, for messages: "prompt, completion" */
	Example *ex;
	int n;
	int n_skipped;   /* rows skipped with skip_invalid_rows */
	int n_truncated; /* sequences cut to max_length */
	long n_tokens;   /* over every sequence, chosen and rejected */
	int32_t *id_pool;
	uint8_t *mask_pool;
	char *extra_pool;
} Dataset;

/* "language modeling", "prompt-only", "prompt-completion", "preference",
 * "unpaired preference" ("auto" for TRL_FMT_AUTO). */
const char *dataset_format_name(TrlDataFormat f);

/* Fails, naming path, the data's format and columns, the method and the formats
 * it reads, unless d's format is one of ok[0..n_ok). */
int dataset_check_method(const Dataset *d, const char *path, const char *method,
                         const TrlDataFormat *ok, int n_ok, TrlErr *err);

/* The id of eos_token in t (TRL's eos_token key), or t's EOS when eos_token is
 * NULL or empty; an unknown token is an error. */
int dataset_eos_id(const Tokenizer *t, const char *eos_token, int32_t *id, TrlErr *err);

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

/* Preference micro-batch of the n examples idx[0..n): rows 0..n-1 are prompt +
 * chosen, rows n..2n-1 prompt + rejected (TRL's [chosen; rejected]), padded
 * to the longest. Returns the number of target tokens. */
long batch_fill_pairs(Batch *b, const Dataset *d, const int *idx, int n, int pad_id);

/* KTO's mismatched rows: row i is the prompt of example idx[i] followed by the
 * completion of example partner[i] (mask on that completion), cut to max_len
 * (<= 0: no cut). Returns the number of target tokens. */
long batch_fill_mismatched(Batch *b, const Dataset *d, const int *idx, const int *partner,
                           int n, int max_len, int pad_id);

/* Turns a preference dataset into unpaired preference data as TRL's
 * unpair_preference_dataset does (a batched map of 1000 pairs): each chunk
 * of up to 1000 pairs becomes its prompt + chosen examples (label 1), then
 * its prompt + rejected examples (label 0), sharing the pool. Other formats
 * are left as they are. */
int dataset_unpair(Dataset *d, TrlErr *err);

/* Longest row, for allocating activations. */
int rows_max_len(const RowSet *rs);

/* The deterministic sampler: the permutation of [0, n) used in epoch `epoch`
 * for seed `seed` (Fisher-Yates on an Rng seeded from (seed, epoch)), so any
 * position (epoch, index) can be recomputed on resume. */
void sampler_permutation(int *perm, int n, uint64_t seed, long epoch);

#endif
