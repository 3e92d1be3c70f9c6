/* tokenizer.h - text <-> token ids behind one interface. This version has the
 * built-in byte-level tokenizer (ids 0..255 are bytes, then special tokens);
 * Hugging Face tokenizer.json models plug in as another kind later.
 */
#ifndef TRL_TOKENIZER_H
#define TRL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "trl.h"

typedef enum { TRL_TOK_BYTES = 0 } TrlTokKind;

#define TRL_TOK_MAX_SPECIAL 8

typedef struct Tokenizer {
	TrlTokKind kind;
	int vocab_size; /* bytes + special tokens */
	int eos_id;     /* "<|endoftext|>" for the byte tokenizer */
	int pad_id;     /* "<|pad|>" */
	int bos_id;     /* -1: none */
	int n_special;
	char special[TRL_TOK_MAX_SPECIAL][32]; /* text of ids 256 .. 256+n_special-1 */
} Tokenizer;

/* The byte tokenizer: 256 bytes, then <|endoftext|> (256, EOS) and <|pad|> (257). */
void tokenizer_init_bytes(Tokenizer *t);
void tokenizer_free(Tokenizer *t);

/* Appends the ids of text[0..len) to out (capacity cap). Returns the number of
 * ids the text needs (which may exceed cap: then only cap were written), or a
 * negative code. Special-token strings in text are ordinary text. */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int32_t *out,
                     int cap, TrlErr *err);

/* Writes the text of ids into buf (NUL-terminated, truncated to cap - 1);
 * special tokens are written as their strings unless skip_special, and ids
 * outside the vocabulary produce no text. Returns the full length the text
 * needs (excluding the NUL). */
size_t tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char *buf, size_t cap);

#endif
