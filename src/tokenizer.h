/* tokenizer.h - text <-> token ids behind one interface: the built-in byte
 * tokenizer (ids 0..255 are bytes, then special tokens) or a Hugging Face
 * tokenizer.json BPE model (tokenizer_hf.c).
 *
 * Usage: tokenizer_init_bytes(&t) or tokenizer_load_dir(&t, dir, &err); then
 * tokenizer_encode / tokenizer_decode from any number of threads; tokenizer_free(&t)
 * releases what either allocated and is safe on a zeroed struct. The caller owns
 * the Tokenizer struct itself.
 */
#ifndef TRL_TOKENIZER_H
#define TRL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "trl.h"

typedef enum { TRL_TOK_BYTES = 0, TRL_TOK_HF = 1 } TrlTokKind;

struct TokHF;

#define TRL_TOK_MAX_SPECIAL 8

typedef struct Tokenizer {
	TrlTokKind kind;
	int vocab_size; /* bytes + special tokens */
	int eos_id;     /* "<|endoftext|>" for the byte tokenizer */
	int pad_id;     /* "<|pad|>" */
	int bos_id;     /* -1: none */
	int n_special;
	char special[TRL_TOK_MAX_SPECIAL][32]; /* text of ids 256 .. 256+n_special-1 */
	int add_bos;                           /* TRL_TOK_ADD_SPECIAL prepends bos_id */
	int add_eos;                           /* TRL_TOK_ADD_SPECIAL appends eos_id */
	struct TokHF *hf;                      /* TRL_TOK_HF: the loaded model, owned */
	uint64_t fingerprint; /* hash of what defines the encoding (the files read) */
} Tokenizer;

/* Flags for tokenizer_encode_ex. TRL_TOK_ADD_SPECIAL adds what the model adds
 * around a single text: the config's add_bos_token / add_eos_token when present,
 * else the TemplateProcessing post-processor's special tokens. */
#define TRL_TOK_ADD_SPECIAL 1

/* The byte tokenizer: 256 bytes, then <|endoftext|> (256, EOS) and <|pad|> (257). */
void tokenizer_init_bytes(Tokenizer *t);
void tokenizer_free(Tokenizer *t);

/* Loads dir/tokenizer.json and (when present) dir/tokenizer_config.json: a BPE
 * model with byte-level (GPT-2, Llama-3, Qwen) or SentencePiece-style (Metaspace,
 * Prepend + Replace, byte fallback) pre-processing. Any component this code does
 * not implement is an error naming it, never a silently different encoding.
 * bos_id / eos_id / pad_id come from tokenizer_config.json (-1 when absent; pad_id
 * falls back to eos_id). On failure t is left zeroed. */
int tokenizer_load_dir(Tokenizer *t, const char *dir, TrlErr *err);
/* The same from explicit paths; config_path may be NULL. */
int tokenizer_load_files(Tokenizer *t, const char *json_path, const char *config_path,
                         TrlErr *err);

/* Writes the ids of text[0..len) to out (capacity cap). Returns the number of
 * ids the text needs (which may exceed cap: then only cap were written), or a
 * negative code. Adds no BOS/EOS. For the byte tokenizer special-token strings in
 * text are ordinary text; a Hugging Face tokenizer splits out its added tokens
 * (special or not) as the reference library does. Text must be valid UTF-8 for a
 * Hugging Face tokenizer. */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int32_t *out,
                     int cap, TrlErr *err);
/* tokenizer_encode with flags (TRL_TOK_ADD_SPECIAL or 0). */
int tokenizer_encode_ex(const Tokenizer *t, const char *text, size_t len, int flags,
                        int32_t *out, int cap, TrlErr *err);

/* The id of a token string (vocabulary or added token), or -1. */
int32_t tokenizer_token_to_id(const Tokenizer *t, const char *s, size_t len);

/* Writes the text of ids into buf (NUL-terminated, truncated to cap - 1);
 * special tokens are written as their strings unless skip_special, and ids
 * outside the vocabulary produce no text. Returns the full length the text
 * needs (excluding the NUL). */
size_t tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char *buf, size_t cap);

/* Implementation of the TRL_TOK_HF kind, called by tokenizer.c's dispatch. */
int tokenizer_hf_encode(const Tokenizer *t, const char *text, size_t len, int flags,
                        int32_t *out, int cap, TrlErr *err);
size_t tokenizer_hf_decode(const Tokenizer *t, const int32_t *ids, int n,
                           int skip_special, char *buf, size_t cap);
int32_t tokenizer_hf_token_to_id(const Tokenizer *t, const char *s, size_t len);
void tokenizer_hf_free(Tokenizer *t);

#endif
