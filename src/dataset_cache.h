/* dataset_cache.h - tokenized datasets saved to disk, so a rerun does not
 * tokenize again.
 *
 * The key is a hash of the JSONL file's bytes, the tokenizer's fingerprint
 * (the bytes of tokenizer.json and tokenizer_config.json), every
 * DatasetOptions field and the cache format version: change any of them and
 * the entry is simply not found. Entries are written to a temporary name and
 * renamed, so readers see a whole file or none; a file that fails its checks
 * is ignored and rebuilt, never trusted.
 *
 * Usage:
 *     int hit;
 *     rc = dataset_load_cached(&d, "train.jsonl", &opt, &tok, cache_dir, write, &hit,
 * &err); cache_dir NULL or "" loads without the cache. With write, a miss saves the
 * tokenized dataset (a failure to save is not an error: it only costs the
 * next run the tokenization).
 */
#ifndef TRL_DATASET_CACHE_H
#define TRL_DATASET_CACHE_H

#include "dataset.h"

int dataset_load_cached(Dataset *d, const char *path, const DatasetOptions *opt,
                        const Tokenizer *tok, const char *cache_dir, int write, int *hit,
                        TrlErr *err);

/* The key for these inputs (exposed for tests). */
uint64_t dataset_cache_key(const char *bytes, size_t len, const DatasetOptions *opt,
                           const Tokenizer *tok);

#endif
