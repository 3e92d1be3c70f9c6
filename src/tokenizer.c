/* tokenizer.c - the built-in byte-level tokenizer (one id per byte, then specials) and
 * the dispatch to tokenizer_hf.c. */
#include "tokenizer.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

void tokenizer_init_bytes(Tokenizer *t)
{
	memset(t, 0, sizeof *t);
	t->kind = TRL_TOK_BYTES;
	t->n_special = 2;
	snprintf(t->special[0], sizeof t->special[0], "<|endoftext|>");
	snprintf(t->special[1], sizeof t->special[1], "<|pad|>");
	t->vocab_size = 256 + t->n_special;
	t->eos_id = 256;
	t->pad_id = 257;
	t->bos_id = -1;
	t->fingerprint = 0x4259544553ULL + 1; /* "BYTES", layout version 1 */
}

void tokenizer_free(Tokenizer *t)
{
	if (t->kind == TRL_TOK_HF)
		tokenizer_hf_free(t);
	memset(t, 0, sizeof *t);
}

int32_t tokenizer_token_to_id(const Tokenizer *t, const char *s, size_t len)
{
	if (t->kind == TRL_TOK_HF)
		return tokenizer_hf_token_to_id(t, s, len);
	if (len == 1)
		return (unsigned char)s[0];
	for (int i = 0; i < t->n_special; i++)
		if (strlen(t->special[i]) == len && memcmp(t->special[i], s, len) == 0)
			return 256 + i;
	return -1;
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int32_t *out,
                     int cap, TrlErr *err)
{
	return tokenizer_encode_ex(t, text, len, 0, out, cap, err);
}

int tokenizer_encode_ex(const Tokenizer *t, const char *text, size_t len, int flags,
                        int32_t *out, int cap, TrlErr *err)
{
	if (t->kind == TRL_TOK_HF)
		return tokenizer_hf_encode(t, text, len, flags, out, cap, err);
	(void)flags; /* the byte tokenizer adds nothing around a text */
	if (t->kind != TRL_TOK_BYTES)
		return trl_errf(err, TRL_EINTERNAL,
		                "tokenizer kind %d is not implemented", (int)t->kind);
	if (len > (size_t)INT_MAX)
		return trl_errf(err, TRL_EINVAL,
		                "text of %zu bytes is too long to tokenize (limit %d)",
		                len, INT_MAX);
	size_t n = len < (size_t)(cap > 0 ? cap : 0) ? len : (size_t)(cap > 0 ? cap : 0);
	const unsigned char *s = (const unsigned char *)text;
	for (size_t i = 0; i < n; i++)
		out[i] = s[i];
	return (int)len;
}

size_t tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char *buf, size_t cap)
{
	if (t->kind == TRL_TOK_HF)
		return tokenizer_hf_decode(t, ids, n, skip_special, buf, cap);
	size_t len = 0;
	for (int i = 0; i < n; i++) {
		int32_t id = ids[i];
		const char *piece;
		size_t plen;
		char byte;
		if (id >= 0 && id < 256) {
			byte = (char)(unsigned char)id;
			piece = &byte;
			plen = 1;
		} else if (id >= 256 && id < 256 + t->n_special) {
			if (skip_special)
				continue;
			piece = t->special[id - 256];
			plen = strlen(piece);
		} else {
			/* An id outside the vocabulary has no text. */
			continue;
		}
		if (cap > 0 && len < cap - 1) {
			size_t room = cap - 1 - len;
			memcpy(buf + len, piece, plen < room ? plen : room);
		}
		len += plen;
	}
	if (cap > 0)
		buf[len < cap - 1 ? len : cap - 1] = 0;
	return len;
}
