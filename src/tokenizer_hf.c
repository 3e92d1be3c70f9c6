/* tokenizer_hf.c - Hugging Face tokenizer.json BPE tokenizers: load, encode, decode. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "bpe.h"
#include "json.h"

#define HF_MAX_STEPS 16

typedef struct TokHF TokHF;

typedef enum {
	NORM_NFC,
	NORM_NFD,
	NORM_NFKC,
	NORM_NFKD,
	NORM_LOWERCASE,
	NORM_PREPEND,
	NORM_REPLACE
} NormKind;

typedef struct Norm {
	NormKind kind;
	char *a, *b; /* Prepend: a; Replace: a -> b */
	size_t alen, blen;
} Norm;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } PreKind;

typedef struct Pre {
	PreKind kind;
	pcre2_code *re;       /* Split, or ByteLevel with use_regex */
	int removed;          /* Split behavior "Removed" (else "Isolated") */
	int add_prefix_space; /* ByteLevel */
	char repl[8];         /* Metaspace replacement character */
	size_t repl_len;
	int prepend; /* Metaspace: 0 never, 1 always, 2 first */
	int split;   /* Metaspace */
} Pre;

typedef enum {
	DEC_BYTELEVEL,
	DEC_BYTEFALLBACK,
	DEC_FUSE,
	DEC_STRIP,
	DEC_REPLACE,
	DEC_METASPACE
} DecKind;

typedef struct Dec {
	DecKind kind;
	char *a, *b; /* Replace: a -> b; Strip, Metaspace: a is the character */
	size_t alen, blen;
	int start, stop; /* Strip */
	int prepend;     /* Metaspace: strip the first token's leading space */
} Dec;

typedef struct Added {
	char *s;
	size_t len;
	int32_t id;
	int lstrip, rstrip;
} Added;

/* Added tokens matched before (unnormalized) or after (normalized) normalisation,
 * grouped by first byte: idx[start[c] .. start[c + 1]) begin with byte c. */
typedef struct AddedSet {
	int *idx;
	int start[257];
} AddedSet;

struct TokHF {
	Bpe bpe;
	Norm norm[HF_MAX_STEPS];
	int n_norm;
	Pre pre[HF_MAX_STEPS];
	int n_pre;
	Dec dec[HF_MAX_STEPS];
	int n_dec;
	Added *added;
	int n_added;
	AddedSet raw, normed;
	int32_t pre_ids[4], post_ids[4]; /* TemplateProcessing single: around A */
	int n_pre_ids, n_post_ids;
	uint8_t *special; /* (n_ids) 1 for special tokens, skipped by skip_special */
};

typedef struct Span {
	size_t off, len;
	int added; /* index into added, or -1 */
} Span;

typedef struct SpanVec {
	Span *p;
	size_t n, cap;
} SpanVec;

static int span_push(SpanVec *v, size_t off, size_t len, int added)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 64;
		Span *p = realloc(v->p, cap * sizeof *p);
		if (!p)
			return TRL_ENOMEM;
		v->p = p;
		v->cap = cap;
	}
	v->p[v->n++] = (Span){off, len, added};
	return 0;
}

static char *dupmem(const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

/* ---- loading ---------------------------------------------------------------- */

static const char *type_of(const JsonValue *v)
{
	const char *s = json_str(json_get(v, "type"));
	return s ? s : "(missing)";
}

static int get_bool(const JsonValue *obj, const char *key, int dflt)
{
	const JsonValue *v = json_get(obj, key);
	return v && v->type == JSON_BOOL ? v->boolean : dflt;
}

/* Rewrites an Oniguruma-style pattern from tokenizer.json for PCRE2 so that it
 * matches what the reference matches: \s and \S become the Unicode White_Space
 * property (PCRE2's \s would add U+180E), \d is \p{Nd}, \w is Oniguruma's word
 * class, and (?i:...) folds ASCII letters only, as the reference's JS port does. */
static int regex_translate(const char *p, size_t n, JsonBuf *o, TrlErr *err)
{
	int ci_stack[64], depth = 0, ci = 0, in_class = 0;
	size_t class_start = 0, class_pos = 0;
	int class_letters = 0;
	for (size_t i = 0; i < n;) {
		char c = p[i];
		if (c == '\\' && i + 1 < n) {
			char e = p[i + 1];
			const char *word = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
			if (e == 's') {
				json_buf_puts(o, "\\p{White_Space}");
			} else if (e == 'S') {
				json_buf_puts(o, "\\P{White_Space}");
			} else if (e == 'd') {
				json_buf_puts(o, "\\p{Nd}");
			} else if (e == 'D') {
				json_buf_puts(o, "\\P{Nd}");
			} else if (e == 'w') {
				json_buf_printf(o, in_class ? "%s" : "[%s]", word);
			} else if (e == 'W' && !in_class) {
				json_buf_printf(o, "[^%s]", word);
			} else if ((e == 'p' || e == 'P') && i + 2 < n &&
			           p[i + 2] == '{') {
				const char *end = memchr(p + i, '}', n - i);
				if (!end)
					return trl_errf(err, TRL_EFORMAT,
					                "unterminated \\p{ in regex");
				json_buf_put(o, p + i, (size_t)(end - (p + i)) + 1);
				i = (size_t)(end - p) + 1;
				continue;
			} else if (e == 'W' || e == 'h' || e == 'H' || e == 'A' ||
			           e == 'z' || e == 'Z' || e == 'b' || e == 'B' ||
			           e == 'X' || e == 'R') {
				return trl_errf(err, TRL_EUNSUPPORTED,
				                "regex escape \\%c is not supported", e);
			} else {
				json_buf_put(o, p + i, 2);
			}
			i += 2;
			continue;
		}
		if (in_class) {
			if (c == ']' && i > class_pos) {
				in_class = 0;
				json_buf_put(o, "]", 1);
				if (ci && class_letters) {
					/* A class under (?i:) takes PCRE2's own caseless
					 * matching. */
					json_buf_put(o, "    ", 4);
					if (!o->oom) {
						memmove(o->p + class_start + 4,
						        o->p + class_start,
						        o->len - 4 - class_start);
						memcpy(o->p + class_start, "(?i:", 4);
						json_buf_put(o, ")", 1);
					}
				}
			} else {
				if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
					class_letters = 1;
				json_buf_put(o, &c, 1);
			}
			i++;
			continue;
		}
		if (c == '[') {
			in_class = 1;
			class_letters = 0;
			class_start = o->len;
			json_buf_put(o, "[", 1);
			i++;
			if (i < n && p[i] == '^') {
				json_buf_put(o, "^", 1);
				i++;
			}
			class_pos = i + 1; /* a ']' right at the start is literal */
			continue;
		}
		if (c == '(') {
			if (depth == 64)
				return trl_errf(err, TRL_EUNSUPPORTED,
				                "regex nests too deeply");
			ci_stack[depth++] = ci;
			if (n - i >= 4 && memcmp(p + i, "(?i:", 4) == 0) {
				json_buf_puts(o, "(?:");
				ci = 1;
				i += 4;
				continue;
			}
			if (n - i >= 3 && p[i + 1] == '?' && p[i + 2] != ':' &&
			    p[i + 2] != '=' && p[i + 2] != '!' && p[i + 2] != '<' &&
			    p[i + 2] != '>')
				return trl_errf(err, TRL_EUNSUPPORTED,
				                "regex group '(?%c' is not supported",
				                p[i + 2]);
			json_buf_put(o, "(", 1);
			i++;
			continue;
		}
		if (c == ')') {
			if (depth > 0)
				ci = ci_stack[--depth];
			json_buf_put(o, ")", 1);
			i++;
			continue;
		}
		if (ci && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
			char lo = (char)(c | 0x20), hi = (char)(c & ~0x20);
			json_buf_printf(o, "[%c%c]", lo, hi);
			i++;
			continue;
		}
		json_buf_put(o, &c, 1);
		i++;
	}
	if (o->oom)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	return 0;
}

static int regex_compile(const char *pat, size_t n, pcre2_code **out, TrlErr *err)
{
	JsonBuf b = {0};
	int rc = regex_translate(pat, n, &b, err);
	if (rc < 0) {
		json_buf_free(&b);
		return rc;
	}
	int ecode;
	PCRE2_SIZE eoff;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)(b.p ? b.p : ""), b.len,
	                               PCRE2_UTF | PCRE2_UCP, &ecode, &eoff, NULL);
	if (!re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ecode, msg, sizeof msg);
		rc = trl_errf(err, TRL_EUNSUPPORTED,
		              "regex '%.*s' does not compile (as '%s'): %s at offset %zu",
		              (int)n, pat, b.p ? b.p : "", (const char *)msg,
		              (size_t)eoff);
		json_buf_free(&b);
		return rc;
	}
	json_buf_free(&b);
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
	*out = re;
	return 0;
}

/* The GPT-2 pattern ByteLevel uses when use_regex is true. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* A pattern object {"String": s} or {"Regex": r}. A String pattern is compiled as
 * a literal regex when re is not NULL. */
static int pattern_load(const JsonValue *pat, const char *what, char **str, size_t *len,
                        pcre2_code **re, TrlErr *err)
{
	const JsonValue *s = json_get(pat, "String"), *r = json_get(pat, "Regex");
	if (s && s->type == JSON_STRING) {
		if (re) {
			JsonBuf b = {0};
			json_buf_puts(&b, "\\Q");
			json_buf_put(&b, s->str, s->len);
			json_buf_puts(&b, "\\E");
			int ecode;
			PCRE2_SIZE eoff;
			*re = b.oom ? NULL
			            : pcre2_compile((PCRE2_SPTR)b.p, b.len, PCRE2_UTF,
			                            &ecode, &eoff, NULL);
			json_buf_free(&b);
			if (!*re)
				return trl_errf(
				    err, TRL_EUNSUPPORTED,
				    "tokenizer.json: %s: String pattern does not compile",
				    what);
			return 0;
		}
		*str = dupmem(s->str, s->len);
		*len = s->len;
		return *str ? 0 : trl_errf(err, TRL_ENOMEM, "out of memory");
	}
	if (r && r->type == JSON_STRING) {
		if (!re)
			return trl_errf(
			    err, TRL_EUNSUPPORTED,
			    "tokenizer.json: %s with a Regex pattern is not supported "
			    "(supported: String patterns)",
			    what);
		int rc = regex_compile(r->str, r->len, re, err);
		if (rc < 0)
			return trl_errf(err, rc, "tokenizer.json: %s: %s", what,
			                err->msg);
		return 0;
	}
	return trl_errf(err, TRL_EFORMAT,
	                "tokenizer.json: %s: pattern needs String or Regex", what);
}

static int norm_load(TokHF *h, const JsonValue *v, TrlErr *err)
{
	if (!v || v->type == JSON_NULL)
		return 0;
	const char *type = type_of(v);
	if (strcmp(type, "Sequence") == 0) {
		const JsonValue *list = json_get(v, "normalizers");
		for (size_t i = 0; list && i < list->len; i++) {
			int rc = norm_load(h, json_at(list, i), err);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	if (h->n_norm == HF_MAX_STEPS)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "tokenizer.json: too many normalizers");
	Norm *n = &h->norm[h->n_norm];
	memset(n, 0, sizeof *n);
	if (strcmp(type, "NFC") == 0) {
		n->kind = NORM_NFC;
	} else if (strcmp(type, "NFD") == 0) {
		n->kind = NORM_NFD;
	} else if (strcmp(type, "NFKC") == 0) {
		n->kind = NORM_NFKC;
	} else if (strcmp(type, "NFKD") == 0) {
		n->kind = NORM_NFKD;
	} else if (strcmp(type, "Lowercase") == 0) {
		n->kind = NORM_LOWERCASE;
	} else if (strcmp(type, "Prepend") == 0) {
		const JsonValue *p = json_get(v, "prepend");
		if (!p || p->type != JSON_STRING)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: normalizer Prepend needs \"prepend\"");
		n->kind = NORM_PREPEND;
		n->a = dupmem(p->str, p->len);
		n->alen = p->len;
	} else if (strcmp(type, "Replace") == 0) {
		const JsonValue *c = json_get(v, "content");
		if (!c || c->type != JSON_STRING)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: normalizer Replace needs \"content\"");
		n->kind = NORM_REPLACE;
		int rc = pattern_load(json_get(v, "pattern"), "normalizer Replace", &n->a,
		                      &n->alen, NULL, err);
		if (rc < 0)
			return rc;
		n->b = dupmem(c->str, c->len);
		n->blen = c->len;
		if (n->alen == 0)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: normalizer Replace has an empty pattern");
	} else {
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "tokenizer.json: normalizer type '%s' is not supported "
		                "(supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, "
		                "Replace with a String pattern, Sequence)",
		                type);
	}
	h->n_norm++;
	if ((n->kind == NORM_PREPEND || n->kind == NORM_REPLACE) && !n->a)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	if (n->kind == NORM_REPLACE && !n->b)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	return 0;
}

static int pre_load(TokHF *h, const JsonValue *v, TrlErr *err)
{
	if (!v || v->type == JSON_NULL)
		return 0;
	const char *type = type_of(v);
	if (strcmp(type, "Sequence") == 0) {
		const JsonValue *list = json_get(v, "pretokenizers");
		for (size_t i = 0; list && i < list->len; i++) {
			int rc = pre_load(h, json_at(list, i), err);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	if (h->n_pre == HF_MAX_STEPS)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "tokenizer.json: too many pre_tokenizers");
	if (h->n_pre > 0 && h->pre[h->n_pre - 1].kind == PRE_BYTELEVEL)
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "tokenizer.json: pre_tokenizer '%s' after ByteLevel is not "
		    "supported (ByteLevel must come last)",
		    type);
	Pre *p = &h->pre[h->n_pre++];
	memset(p, 0, sizeof *p);
	if (strcmp(type, "Split") == 0) {
		p->kind = PRE_SPLIT;
		const char *beh = json_str(json_get(v, "behavior"));
		if (get_bool(v, "invert", 0))
			return trl_errf(
			    err, TRL_EUNSUPPORTED,
			    "tokenizer.json: pre_tokenizer Split with invert=true is "
			    "not supported");
		if (beh && strcmp(beh, "Removed") == 0)
			p->removed = 1;
		else if (!beh || strcmp(beh, "Isolated") != 0)
			return trl_errf(
			    err, TRL_EUNSUPPORTED,
			    "tokenizer.json: pre_tokenizer Split behavior '%s' is not "
			    "supported (supported: Isolated, Removed)",
			    beh ? beh : "(missing)");
		return pattern_load(json_get(v, "pattern"), "pre_tokenizer Split", NULL,
		                    NULL, &p->re, err);
	}
	if (strcmp(type, "ByteLevel") == 0) {
		p->kind = PRE_BYTELEVEL;
		p->add_prefix_space = get_bool(v, "add_prefix_space", 1);
		if (get_bool(v, "use_regex", 1))
			return regex_compile(gpt2_pattern, sizeof gpt2_pattern - 1,
			                     &p->re, err);
		return 0;
	}
	if (strcmp(type, "Metaspace") == 0) {
		p->kind = PRE_METASPACE;
		const char *r = json_str(json_get(v, "replacement"));
		r = r ? r : "\xe2\x96\x81";
		p->repl_len = strlen(r);
		if (p->repl_len == 0 || p->repl_len >= sizeof p->repl)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: Metaspace replacement must be one "
			    "character");
		memcpy(p->repl, r, p->repl_len);
		const char *scheme = json_str(json_get(v, "prepend_scheme"));
		if (!scheme)
			p->prepend = get_bool(v, "add_prefix_space", 1);
		else if (strcmp(scheme, "always") == 0)
			p->prepend = 1;
		else if (strcmp(scheme, "first") == 0)
			p->prepend = 2;
		else
			p->prepend = 0;
		p->split = get_bool(v, "split", 1);
		return 0;
	}
	return trl_errf(err, TRL_EUNSUPPORTED,
	                "tokenizer.json: pre_tokenizer type '%s' is not supported "
	                "(supported: Split, ByteLevel, Metaspace, Sequence)",
	                type);
}

static int dec_load(TokHF *h, const JsonValue *v, TrlErr *err)
{
	if (!v || v->type == JSON_NULL)
		return 0;
	const char *type = type_of(v);
	if (strcmp(type, "Sequence") == 0) {
		const JsonValue *list = json_get(v, "decoders");
		for (size_t i = 0; list && i < list->len; i++) {
			int rc = dec_load(h, json_at(list, i), err);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	if (h->n_dec == HF_MAX_STEPS)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "tokenizer.json: too many decoders");
	Dec *d = &h->dec[h->n_dec++];
	memset(d, 0, sizeof *d);
	if (strcmp(type, "ByteLevel") == 0) {
		d->kind = DEC_BYTELEVEL;
	} else if (strcmp(type, "ByteFallback") == 0) {
		d->kind = DEC_BYTEFALLBACK;
	} else if (strcmp(type, "Fuse") == 0) {
		d->kind = DEC_FUSE;
	} else if (strcmp(type, "Strip") == 0) {
		const char *c = json_str(json_get(v, "content"));
		int64_t start = 0, stop = 0;
		json_int(json_get(v, "start"), &start);
		json_int(json_get(v, "stop"), &stop);
		d->kind = DEC_STRIP;
		d->a = dupmem(c ? c : " ", strlen(c ? c : " "));
		d->alen = strlen(c ? c : " ");
		d->start = (int)start;
		d->stop = (int)stop;
	} else if (strcmp(type, "Replace") == 0) {
		const JsonValue *c = json_get(v, "content");
		if (!c || c->type != JSON_STRING)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: decoder Replace needs \"content\"");
		d->kind = DEC_REPLACE;
		int rc = pattern_load(json_get(v, "pattern"), "decoder Replace", &d->a,
		                      &d->alen, NULL, err);
		if (rc < 0)
			return rc;
		d->b = dupmem(c->str, c->len);
		d->blen = c->len;
	} else if (strcmp(type, "Metaspace") == 0) {
		const char *r = json_str(json_get(v, "replacement"));
		const char *scheme = json_str(json_get(v, "prepend_scheme"));
		d->kind = DEC_METASPACE;
		d->a = dupmem(r ? r : "\xe2\x96\x81", strlen(r ? r : "\xe2\x96\x81"));
		d->alen = strlen(r ? r : "\xe2\x96\x81");
		d->prepend = scheme ? strcmp(scheme, "never") != 0
		                    : get_bool(v, "add_prefix_space", 1);
	} else {
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "tokenizer.json: decoder type '%s' is not supported "
		    "(supported: ByteLevel, ByteFallback, Fuse, Strip, Replace, "
		    "Metaspace, Sequence)",
		    type);
	}
	if ((d->kind == DEC_STRIP || d->kind == DEC_METASPACE ||
	     d->kind == DEC_REPLACE) &&
	    !d->a)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	return 0;
}

static int template_load(TokHF *h, const JsonValue *v, TrlErr *err)
{
	const JsonValue *single = json_get(v, "single"),
	                *sp = json_get(v, "special_tokens");
	int seen_a = 0;
	for (size_t i = 0; single && i < single->len; i++) {
		const JsonValue *item = json_at(single, i),
		                *st = json_get(item, "SpecialToken");
		if (json_get(item, "Sequence")) {
			seen_a = 1;
			continue;
		}
		const char *name = json_str(json_get(st, "id"));
		const JsonValue *ids = json_get(json_get(sp, name ? name : ""), "ids");
		if (!name || !ids)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: TemplateProcessing special token '%s' is "
			    "not in special_tokens",
			    name ? name : "(missing)");
		for (size_t k = 0; k < ids->len; k++) {
			int64_t id;
			int *n = seen_a ? &h->n_post_ids : &h->n_pre_ids;
			int32_t *dst = seen_a ? h->post_ids : h->pre_ids;
			if (json_int(json_at(ids, k), &id) < 0 || id < 0 ||
			    id >= h->bpe.n_ids)
				return trl_errf(
				    err, TRL_EFORMAT,
				    "tokenizer.json: TemplateProcessing id of '%s' is "
				    "invalid",
				    name);
			if (*n == 4)
				return trl_errf(
				    err, TRL_EUNSUPPORTED,
				    "tokenizer.json: TemplateProcessing adds more than 4 "
				    "tokens on one side");
			dst[(*n)++] = (int32_t)id;
		}
	}
	return 0;
}

static int post_load(TokHF *h, const JsonValue *v, TrlErr *err)
{
	if (!v || v->type == JSON_NULL)
		return 0;
	const char *type = type_of(v);
	if (strcmp(type, "ByteLevel") == 0)
		return 0; /* it only adjusts offsets, which this code does not report */
	if (strcmp(type, "TemplateProcessing") == 0)
		return template_load(h, v, err);
	if (strcmp(type, "Sequence") == 0) {
		const JsonValue *list = json_get(v, "processors");
		for (size_t i = 0; list && i < list->len; i++) {
			int rc = post_load(h, json_at(list, i), err);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	return trl_errf(err, TRL_EUNSUPPORTED,
	                "tokenizer.json: post_processor type '%s' is not supported "
	                "(supported: ByteLevel, TemplateProcessing, Sequence)",
	                type);
}

static int added_set_build(TokHF *h, AddedSet *set, const uint8_t *member)
{
	int n = 0;
	for (int i = 0; i < h->n_added; i++)
		n += member[i] && h->added[i].len > 0;
	set->idx = malloc((size_t)(n ? n : 1) * sizeof *set->idx);
	if (!set->idx)
		return TRL_ENOMEM;
	int k = 0;
	for (int c = 0; c < 256; c++) {
		set->start[c] = k;
		for (int i = 0; i < h->n_added; i++)
			if (member[i] && h->added[i].len > 0 &&
			    (unsigned char)h->added[i].s[0] == c)
				set->idx[k++] = i;
	}
	set->start[256] = k;
	return 0;
}

static int model_load(TokHF *h, const JsonValue *root, TrlErr *err)
{
	const JsonValue *model = json_get(root, "model");
	const char *type = json_str(json_get(model, "type"));
	if (!model || model->type != JSON_OBJECT)
		return trl_errf(err, TRL_EFORMAT, "tokenizer.json: no \"model\" object");
	if (!type || strcmp(type, "BPE") != 0)
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "tokenizer.json: model type '%s' is not supported (supported: "
		    "BPE)",
		    type ? type : "(missing)");
	const JsonValue *vocab = json_get(model, "vocab"),
	                *merges = json_get(model, "merges");
	const JsonValue *added = json_get(root, "added_tokens");
	if (!vocab || vocab->type != JSON_OBJECT || !merges || merges->type != JSON_ARRAY)
		return trl_errf(err, TRL_EFORMAT,
		                "tokenizer.json: model needs a \"vocab\" object and a "
		                "\"merges\" array");
	const JsonValue *dropout = json_get(model, "dropout");
	if (dropout && dropout->type != JSON_NULL)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "tokenizer.json: BPE dropout is not supported");
	const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
	for (int i = 0; i < 2; i++) {
		const char *s = json_str(json_get(model, keys[i]));
		if (s && *s)
			return trl_errf(err, TRL_EUNSUPPORTED,
			                "tokenizer.json: BPE %s '%s' is not supported",
			                keys[i], s);
	}
	int64_t max_id = -1, id;
	for (size_t i = 0; i < vocab->len; i++) {
		if (json_int(&vocab->members[i].value, &id) < 0 || id < 0 ||
		    id > INT32_MAX / 2)
			return trl_errf(err, TRL_EFORMAT,
			                "tokenizer.json: vocab id of '%s' is invalid",
			                vocab->members[i].key);
		max_id = id > max_id ? id : max_id;
	}
	for (size_t i = 0; added && i < added->len; i++) {
		if (json_int(json_get(json_at(added, i), "id"), &id) < 0 || id < 0 ||
		    id > INT32_MAX / 2)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: added_tokens[%zu] has no valid id", i);
		max_id = id > max_id ? id : max_id;
	}
	/* Ids index tables sized by the largest one: a sparse id far beyond the
	 * number of tokens would make those tables huge, so it is an error. */
	size_t n_tokens = vocab->len + (added ? added->len : 0);
	if (max_id >= (int64_t)(4 * n_tokens + 1024))
		return trl_errf(
		    err, TRL_EFORMAT,
		    "tokenizer.json: token id %lld is far beyond the %zu tokens "
		    "defined (ids must be dense)",
		    (long long)max_id, n_tokens);
	int rc = bpe_init(&h->bpe, (int32_t)(max_id + 1), err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < vocab->len; i++) {
		const JsonMember *m = &vocab->members[i];
		json_int(&m->value, &id);
		if ((rc = bpe_set_token(&h->bpe, (int32_t)id, m->key, m->key_len, err)) <
		    0)
			return rc;
	}
	for (size_t i = 0; i < merges->len; i++) {
		const JsonValue *m = json_at(merges, i);
		const char *l, *r;
		size_t ll, rl;
		if (m->type == JSON_STRING) {
			const char *sp = memchr(m->str, ' ', m->len);
			if (!sp)
				return trl_errf(
				    err, TRL_EFORMAT,
				    "tokenizer.json: merges[%zu] '%s' is not \"a b\"", i,
				    m->str);
			l = m->str;
			ll = (size_t)(sp - m->str);
			r = sp + 1;
			rl = m->len - ll - 1;
		} else if (m->type == JSON_ARRAY && m->len == 2 &&
		           json_at(m, 0)->type == JSON_STRING &&
		           json_at(m, 1)->type == JSON_STRING) {
			l = json_at(m, 0)->str;
			ll = json_at(m, 0)->len;
			r = json_at(m, 1)->str;
			rl = json_at(m, 1)->len;
		} else {
			return trl_errf(
			    err, TRL_EFORMAT,
			    "tokenizer.json: merges[%zu] is neither \"a b\" nor [a, b]",
			    i);
		}
		if ((rc = bpe_add_merge(&h->bpe, l, ll, r, rl, (uint32_t)i, err)) < 0)
			return trl_errf(err, rc, "tokenizer.json: %s", err->msg);
	}
	for (int i = 0; i < h->n_pre; i++)
		h->bpe.byte_level |= h->pre[i].kind == PRE_BYTELEVEL;
	h->bpe.byte_fallback = get_bool(model, "byte_fallback", 0);
	h->bpe.ignore_merges = get_bool(model, "ignore_merges", 0);
	h->bpe.fuse_unk = get_bool(model, "fuse_unk", 0);
	const char *unk = json_str(json_get(model, "unk_token"));
	if (unk && (h->bpe.unk_id = bpe_lookup(&h->bpe, unk, strlen(unk))) < 0)
		return trl_errf(err, TRL_EFORMAT,
		                "tokenizer.json: unk_token '%s' is not in the vocabulary",
		                unk);
	/* Added tokens override the vocabulary, as in the reference. */
	size_t na = added ? added->len : 0;
	h->added = calloc(na ? na : 1, sizeof *h->added);
	h->special = calloc((size_t)h->bpe.n_ids, 1);
	uint8_t *normed = calloc(na ? na : 1, 1), *raw = calloc(na ? na : 1, 1);
	if (!h->added || !h->special || !normed || !raw) {
		free(normed);
		free(raw);
		return trl_errf(err, TRL_ENOMEM, "out of memory for added tokens");
	}
	for (size_t i = 0; i < na; i++) {
		const JsonValue *a = json_at(added, i), *c = json_get(a, "content");
		Added *t = &h->added[h->n_added];
		if (!c || c->type != JSON_STRING) {
			rc = trl_errf(err, TRL_EFORMAT,
			              "tokenizer.json: added_tokens[%zu] has no content",
			              i);
			break;
		}
		if (get_bool(a, "single_word", 0)) {
			rc = trl_errf(err, TRL_EUNSUPPORTED,
			              "tokenizer.json: added token '%s' has "
			              "single_word=true, which "
			              "is not supported",
			              c->str);
			break;
		}
		json_int(json_get(a, "id"), &id);
		t->s = dupmem(c->str, c->len);
		t->len = c->len;
		t->id = (int32_t)id;
		t->lstrip = get_bool(a, "lstrip", 0);
		t->rstrip = get_bool(a, "rstrip", 0);
		int special = get_bool(a, "special", 0);
		h->n_added++;
		if (!t->s) {
			rc = trl_errf(err, TRL_ENOMEM, "out of memory");
			break;
		}
		if (get_bool(a, "normalized", !special) && h->n_norm > 0)
			normed[i] = 1;
		else
			raw[i] = 1;
		h->special[id] = (uint8_t)special;
		if ((rc = bpe_set_token(&h->bpe, t->id, t->s, t->len, err)) < 0)
			break;
	}
	/* A normalized added token is matched in normalized text; its content is
	 * matched as written, which equals its normalized form for the normalizers
	 * that leave such tokens alone (NFC of ASCII). */
	if (rc == 0 && (added_set_build(h, &h->raw, raw) < 0 ||
	                added_set_build(h, &h->normed, normed) < 0))
		rc = trl_errf(err, TRL_ENOMEM, "out of memory");
	free(normed);
	free(raw);
	if (rc < 0)
		return rc;
	return bpe_finish(&h->bpe, err);
}

/* A token name in tokenizer_config.json: a string or an {"content": ...} object. */
static int config_token(const Tokenizer *t, const JsonValue *cfg, const char *key,
                        int32_t *id, TrlErr *err)
{
	const JsonValue *v = json_get(cfg, key);
	if (v && v->type == JSON_OBJECT)
		v = json_get(v, "content");
	*id = -1;
	if (!v || v->type != JSON_STRING)
		return 0;
	*id = bpe_lookup(&t->hf->bpe, v->str, v->len);
	if (*id < 0)
		return trl_errf(err, TRL_EFORMAT,
		                "tokenizer_config.json: %s '%s' is not in the vocabulary",
		                key, v->str);
	return 0;
}

static int config_load(Tokenizer *t, const JsonValue *cfg, TrlErr *err)
{
	TokHF *h = t->hf;
	int32_t bos, eos, pad;
	int rc;
	if ((rc = config_token(t, cfg, "bos_token", &bos, err)) < 0 ||
	    (rc = config_token(t, cfg, "eos_token", &eos, err)) < 0 ||
	    (rc = config_token(t, cfg, "pad_token", &pad, err)) < 0)
		return rc;
	t->bos_id = bos;
	t->eos_id = eos;
	t->pad_id = pad >= 0 ? pad : eos;
	const JsonValue *ab = json_get(cfg, "add_bos_token"),
	                *ae = json_get(cfg, "add_eos_token");
	if ((ab && ab->type == JSON_BOOL) || (ae && ae->type == JSON_BOOL)) {
		/* The config's flags win over the post-processor, as transformers
		 * rebuilds the template from them. */
		t->add_bos = get_bool(cfg, "add_bos_token", 0) && bos >= 0;
		t->add_eos = get_bool(cfg, "add_eos_token", 0) && eos >= 0;
		h->n_pre_ids = h->n_post_ids = 0;
		if (t->add_bos)
			h->pre_ids[h->n_pre_ids++] = bos;
		if (t->add_eos)
			h->post_ids[h->n_post_ids++] = eos;
	} else {
		t->add_bos = h->n_pre_ids > 0 && h->pre_ids[0] == bos;
		t->add_eos = h->n_post_ids > 0 && h->post_ids[h->n_post_ids - 1] == eos;
	}
	const JsonValue *extra = json_get(cfg, "additional_special_tokens");
	for (size_t i = 0; extra && i < extra->len; i++) {
		const JsonValue *s = json_at(extra, i);
		if (s && s->type == JSON_OBJECT)
			s = json_get(s, "content");
		int32_t id = s && s->type == JSON_STRING
		                 ? bpe_lookup(&h->bpe, s->str, s->len)
		                 : -1;
		if (id >= 0)
			h->special[id] = 1;
	}
	return 0;
}

int tokenizer_load_files(Tokenizer *t, const char *json_path, const char *config_path,
                         TrlErr *err)
{
	JsonValue *root = NULL, *cfg = NULL;
	memset(t, 0, sizeof *t);
	t->kind = TRL_TOK_HF;
	t->bos_id = t->eos_id = t->pad_id = -1;
	t->hf = calloc(1, sizeof *t->hf);
	if (!t->hf)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	int rc = json_load_file(json_path, &root, err);
	if (rc < 0)
		goto fail;
	/* The encoding is defined by the two files' bytes: their hash keys the
	 * tokenized-dataset cache. */
	const char *paths[2] = {json_path, config_path};
	t->fingerprint = 0x544f4b4846ULL; /* "TOKHF" */
	for (int i = 0; i < 2 && paths[i]; i++) {
		char *bytes;
		size_t n;
		if ((rc = trl_read_file(paths[i], &bytes, &n, err)) < 0)
			goto fail;
		t->fingerprint = trl_hash64(bytes, n, t->fingerprint);
		trl_free(bytes);
	}
	if ((rc = norm_load(t->hf, json_get(root, "normalizer"), err)) < 0 ||
	    (rc = pre_load(t->hf, json_get(root, "pre_tokenizer"), err)) < 0 ||
	    (rc = model_load(t->hf, root, err)) < 0 ||
	    (rc = post_load(t->hf, json_get(root, "post_processor"), err)) < 0 ||
	    (rc = dec_load(t->hf, json_get(root, "decoder"), err)) < 0)
		goto fail;
	t->vocab_size = t->hf->bpe.n_ids;
	if (config_path && (rc = json_load_file(config_path, &cfg, err)) < 0)
		goto fail;
	if ((rc = config_load(t, cfg, err)) < 0)
		goto fail;
	json_free(root);
	json_free(cfg);
	return 0;
fail:
	json_free(root);
	json_free(cfg);
	tokenizer_free(t);
	return rc;
}

int tokenizer_load_dir(Tokenizer *t, const char *dir, TrlErr *err)
{
	char jp[4096], cp[4096];
	snprintf(jp, sizeof jp, "%s/tokenizer.json", dir);
	snprintf(cp, sizeof cp, "%s/tokenizer_config.json", dir);
	FILE *f = fopen(cp, "rb");
	if (f)
		fclose(f);
	return tokenizer_load_files(t, jp, f ? cp : NULL, err);
}

void tokenizer_hf_free(Tokenizer *t)
{
	TokHF *h = t->hf;
	if (!h)
		return;
	for (int i = 0; i < h->n_norm; i++) {
		free(h->norm[i].a);
		free(h->norm[i].b);
	}
	for (int i = 0; i < h->n_pre; i++)
		pcre2_code_free(h->pre[i].re);
	for (int i = 0; i < h->n_dec; i++) {
		free(h->dec[i].a);
		free(h->dec[i].b);
	}
	for (int i = 0; i < h->n_added; i++)
		free(h->added[i].s);
	free(h->added);
	free(h->raw.idx);
	free(h->normed.idx);
	free(h->special);
	bpe_free(&h->bpe);
	free(h);
	t->hf = NULL;
}

int32_t tokenizer_hf_token_to_id(const Tokenizer *t, const char *s, size_t len)
{
	return bpe_lookup(&t->hf->bpe, s, len);
}

/* ---- encoding --------------------------------------------------------------- */

static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	if (s[0] < 0x80 || n < 2) {
		*cp = s[0];
		return 1;
	}
	if (s[0] < 0xE0) {
		*cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
		return 2;
	}
	if (s[0] < 0xF0 && n >= 3) {
		*cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) |
		      (s[2] & 0x3F);
		return 3;
	}
	if (n >= 4) {
		*cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
		      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
		return 4;
	}
	*cp = s[0];
	return 1;
}

/* The Unicode White_Space property, which the reference's trimming uses. */
static int is_white_space(uint32_t c)
{
	return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 ||
	       c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
	       c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Splits text[0..len) around the added tokens of set (leftmost, then longest
 * match), appending spans to v; then applies lstrip / rstrip to the neighbours. */
static int split_added(const TokHF *h, const AddedSet *set, const char *text, size_t len,
                       SpanVec *v)
{
	size_t first = v->n, start = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned c = (unsigned char)text[i];
		int best = -1;
		size_t best_len = 0;
		for (int k = set->start[c]; k < set->start[c + 1]; k++) {
			const Added *a = &h->added[set->idx[k]];
			if (a->len > best_len && a->len <= len - i &&
			    memcmp(a->s, text + i, a->len) == 0) {
				best = set->idx[k];
				best_len = a->len;
			}
		}
		if (best < 0)
			continue;
		if (i > start && span_push(v, start, i - start, -1) < 0)
			return TRL_ENOMEM;
		if (span_push(v, i, best_len, best) < 0)
			return TRL_ENOMEM;
		start = i + best_len;
		i = start - 1;
	}
	if (start < len && span_push(v, start, len - start, -1) < 0)
		return TRL_ENOMEM;
	for (size_t k = first; k < v->n; k++) {
		const Span *s = &v->p[k];
		if (s->added < 0)
			continue;
		if (h->added[s->added].lstrip && k > first && v->p[k - 1].added < 0) {
			Span *p = &v->p[k - 1];
			while (p->len > 0) {
				size_t j = p->off + p->len - 1;
				while (j > p->off &&
				       ((unsigned char)text[j] & 0xC0) == 0x80)
					j--;
				uint32_t cp;
				utf8_decode((const unsigned char *)text + j,
				            p->off + p->len - j, &cp);
				if (!is_white_space(cp))
					break;
				p->len = j - p->off;
			}
		}
		if (h->added[s->added].rstrip && k + 1 < v->n && v->p[k + 1].added < 0) {
			Span *p = &v->p[k + 1];
			while (p->len > 0) {
				uint32_t cp;
				size_t cl = utf8_decode(
				    (const unsigned char *)text + p->off, p->len, &cp);
				if (!is_white_space(cp))
					break;
				p->off += cl;
				p->len -= cl;
			}
		}
	}
	return 0;
}

/* Scratch buffers of one encode call. */
typedef struct Work {
	JsonBuf nb[2]; /* normalisation ping-pong */
	JsonBuf pb;    /* pre-tokenized text */
	SpanVec sec, sub, pa, pb_spans;
	pcre2_match_data *md;
} Work;

static void work_free(Work *w)
{
	json_buf_free(&w->nb[0]);
	json_buf_free(&w->nb[1]);
	json_buf_free(&w->pb);
	free(w->sec.p);
	free(w->sub.p);
	free(w->pa.p);
	free(w->pb_spans.p);
	if (w->md)
		pcre2_match_data_free(w->md);
}

/* Normalizes s[0..n) into one of w->nb; *out points at the result. */
static int normalize(const TokHF *h, Work *w, const char *s, size_t n, const char **out,
                     size_t *out_len)
{
	const char *cur = s;
	size_t cur_len = n;
	int side = 0;
	for (int k = 0; k < h->n_norm; k++) {
		const Norm *nm = &h->norm[k];
		JsonBuf *o = &w->nb[side];
		o->len = 0;
		if (nm->kind <= NORM_NFKD) {
			int ascii = 1;
			for (size_t i = 0; i < cur_len && ascii; i++)
				ascii = (unsigned char)cur[i] < 0x80;
			if (ascii)
				continue; /* ASCII is invariant under every normalisation
				             form */
			static const int opts[] = {UTF8PROC_COMPOSE, UTF8PROC_DECOMPOSE,
			                           UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
			                           UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
			utf8proc_uint8_t *dst = NULL;
			utf8proc_ssize_t r = utf8proc_map(
			    (const utf8proc_uint8_t *)cur, (utf8proc_ssize_t)cur_len,
			    &dst, UTF8PROC_STABLE | opts[nm->kind]);
			if (r < 0)
				return TRL_EINVAL;
			json_buf_put(o, (const char *)dst, (size_t)r);
			free(dst);
		} else if (nm->kind == NORM_LOWERCASE) {
			for (size_t i = 0; i < cur_len;) {
				utf8proc_int32_t cp;
				utf8proc_ssize_t cl = utf8proc_iterate(
				    (const utf8proc_uint8_t *)cur + i,
				    (utf8proc_ssize_t)(cur_len - i), &cp);
				if (cl <= 0)
					return TRL_EINVAL;
				utf8proc_uint8_t enc[4];
				utf8proc_ssize_t el =
				    utf8proc_encode_char(utf8proc_tolower(cp), enc);
				json_buf_put(o, (const char *)enc, (size_t)el);
				i += (size_t)cl;
			}
		} else if (nm->kind == NORM_PREPEND) {
			if (cur_len == 0)
				continue;
			json_buf_put(o, nm->a, nm->alen);
			json_buf_put(o, cur, cur_len);
		} else {
			for (size_t i = 0; i < cur_len;) {
				if (cur_len - i >= nm->alen &&
				    memcmp(cur + i, nm->a, nm->alen) == 0) {
					json_buf_put(o, nm->b, nm->blen);
					i += nm->alen;
				} else {
					json_buf_put(o, cur + i, 1);
					i++;
				}
			}
		}
		if (o->oom)
			return TRL_ENOMEM;
		cur = o->len ? o->p : "";
		cur_len = o->len;
		side ^= 1;
	}
	*out = cur;
	*out_len = cur_len;
	return 0;
}

/* Splits each span of in (offsets into w->pb) with re, appending to out. */
static int regex_split(Work *w, pcre2_code *re, int removed, const SpanVec *in,
                       SpanVec *out)
{
	if (!w->md && !(w->md = pcre2_match_data_create(1, NULL)))
		return TRL_ENOMEM;
	for (size_t k = 0; k < in->n; k++) {
		const char *subj = w->pb.p + in->p[k].off;
		size_t n = in->p[k].len, prev = 0, at = 0;
		while (at <= n) {
			int rc = pcre2_match(re, (PCRE2_SPTR)subj, n, at,
			                     PCRE2_NO_UTF_CHECK, w->md, NULL);
			if (rc == PCRE2_ERROR_NOMATCH)
				break;
			if (rc < 0)
				return TRL_EINTERNAL;
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
			size_t ms = ov[0], me = ov[1];
			if (ms > prev &&
			    span_push(out, in->p[k].off + prev, ms - prev, -1) < 0)
				return TRL_ENOMEM;
			if (me > ms && !removed &&
			    span_push(out, in->p[k].off + ms, me - ms, -1) < 0)
				return TRL_ENOMEM;
			prev = me;
			if (me == ms) {
				if (me >= n)
					break;
				uint32_t cp;
				at = me + utf8_decode((const unsigned char *)subj + me,
				                      n - me, &cp);
			} else {
				at = me;
			}
		}
		if (prev < n && span_push(out, in->p[k].off + prev, n - prev, -1) < 0)
			return TRL_ENOMEM;
	}
	return 0;
}

/* Pre-tokenizes s[0..n) and runs the model on each piece. */
static int encode_piece(const TokHF *h, Work *w, const char *s, size_t n, int section,
                        IdVec *out)
{
	w->pb.len = 0;
	json_buf_put(&w->pb, s, n);
	if (w->pb.oom)
		return TRL_ENOMEM;
	SpanVec *cur = &w->pa, *nxt = &w->pb_spans;
	cur->n = 0;
	if (span_push(cur, 0, n, -1) < 0)
		return TRL_ENOMEM;
	for (int k = 0; k < h->n_pre; k++) {
		const Pre *p = &h->pre[k];
		nxt->n = 0;
		if (p->kind == PRE_SPLIT) {
			int rc = regex_split(w, p->re, p->removed, cur, nxt);
			if (rc < 0)
				return rc;
		} else if (p->kind == PRE_BYTELEVEL) {
			if (p->add_prefix_space) {
				for (size_t i = 0; i < cur->n; i++) {
					Span *sp = &cur->p[i];
					if (sp->len > 0 && w->pb.p[sp->off] == ' ')
						continue;
					size_t off = w->pb.len;
					json_buf_put(&w->pb, " ", 1);
					json_buf_put(&w->pb, w->pb.p + sp->off, sp->len);
					if (w->pb.oom)
						return TRL_ENOMEM;
					sp->off = off;
					sp->len++;
				}
			}
			if (!p->re)
				continue;
			int rc = regex_split(w, p->re, 0, cur, nxt);
			if (rc < 0)
				return rc;
		} else {
			for (size_t i = 0; i < cur->n; i++) {
				size_t off = w->pb.len, o = cur->p[i].off,
				       len = cur->p[i].len;
				int starts =
				    len >= p->repl_len &&
				    memcmp(w->pb.p + o, p->repl, p->repl_len) == 0;
				if (!starts && len > 0 && w->pb.p[o] == ' ')
					starts = 1;
				if (!starts && (p->prepend == 1 ||
				                (p->prepend == 2 && section == 0)))
					json_buf_put(&w->pb, p->repl, p->repl_len);
				for (size_t j = 0; j < len; j++) {
					if (w->pb.p[o + j] == ' ')
						json_buf_put(&w->pb, p->repl,
						             p->repl_len);
					else
						json_buf_put(&w->pb, w->pb.p + o + j, 1);
				}
				if (w->pb.oom)
					return TRL_ENOMEM;
				size_t end = w->pb.len, st = off;
				for (size_t j = off; p->split && j < end; j++)
					if (j > st && end - j >= p->repl_len &&
					    memcmp(w->pb.p + j, p->repl, p->repl_len) ==
					        0) {
						if (span_push(nxt, st, j - st, -1) < 0)
							return TRL_ENOMEM;
						st = j;
					}
				if (end > st && span_push(nxt, st, end - st, -1) < 0)
					return TRL_ENOMEM;
			}
		}
		SpanVec *t = cur;
		cur = nxt;
		nxt = t;
	}
	for (size_t i = 0; i < cur->n; i++) {
		int rc = bpe_encode_word((Bpe *)&h->bpe, w->pb.p + cur->p[i].off,
		                         cur->p[i].len, out);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int encode_text(const TokHF *h, Work *w, const char *text, size_t len, IdVec *out)
{
	int rc = split_added(h, &h->raw, text, len, &w->sec);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < w->sec.n; i++) {
		const Span sec = w->sec.p[i];
		if (sec.added >= 0) {
			if ((rc = idvec_push(out, h->added[sec.added].id)) < 0)
				return rc;
			continue;
		}
		if (sec.len == 0)
			continue;
		const char *norm;
		size_t nlen;
		if ((rc = normalize(h, w, text + sec.off, sec.len, &norm, &nlen)) < 0)
			return rc;
		w->sub.n = 0;
		if ((rc = split_added(h, &h->normed, norm, nlen, &w->sub)) < 0)
			return rc;
		for (size_t j = 0; j < w->sub.n; j++) {
			const Span sub = w->sub.p[j];
			if (sub.added >= 0)
				rc = idvec_push(out, h->added[sub.added].id);
			else if (sub.len > 0)
				rc = encode_piece(h, w, norm + sub.off, sub.len, (int)i,
				                  out);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* The offset of the first invalid UTF-8 sequence in s[0..n), or n. */
static size_t utf8_invalid_at(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		utf8proc_int32_t cp;
		utf8proc_ssize_t cl =
		    utf8proc_iterate(u + i, (utf8proc_ssize_t)(n - i), &cp);
		if (cl <= 0)
			return i;
		i += (size_t)cl;
	}
	return n;
}

int tokenizer_hf_encode(const Tokenizer *t, const char *text, size_t len, int flags,
                        int32_t *out, int cap, TrlErr *err)
{
	const TokHF *h = t->hf;
	size_t bad = utf8_invalid_at(text, len);
	if (bad < len)
		return trl_errf(err, TRL_EINVAL, "text is not valid UTF-8 (at byte %zu)",
		                bad);
	IdVec ids = {0};
	Work w;
	memset(&w, 0, sizeof w);
	int rc = 0;
	for (int i = 0; (flags & TRL_TOK_ADD_SPECIAL) && i < h->n_pre_ids && rc == 0; i++)
		rc = idvec_push(&ids, h->pre_ids[i]);
	if (rc == 0)
		rc = encode_text(h, &w, text, len, &ids);
	for (int i = 0; (flags & TRL_TOK_ADD_SPECIAL) && i < h->n_post_ids && rc == 0;
	     i++)
		rc = idvec_push(&ids, h->post_ids[i]);
	work_free(&w);
	if (rc == 0 && ids.n > (size_t)INT32_MAX)
		rc = trl_errf(err, TRL_EINVAL, "text of %zu bytes has too many tokens",
		              len);
	else if (rc == TRL_ENOMEM)
		trl_errf(err, rc, "out of memory while tokenizing %zu bytes", len);
	else if (rc < 0)
		trl_errf(err, rc, "tokenizing %zu bytes failed (code %d)", len, rc);
	if (rc == 0) {
		size_t n = ids.n < (size_t)(cap > 0 ? cap : 0)
		               ? ids.n
		               : (size_t)(cap > 0 ? cap : 0);
		if (n)
			memcpy(out, ids.p, n * sizeof *out);
		rc = (int)ids.n;
	}
	free(ids.p);
	return rc;
}

/* ---- decoding --------------------------------------------------------------- */

typedef struct StrList {
	JsonBuf *s;
	size_t n, cap;
} StrList;

static JsonBuf *strlist_add(StrList *l)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		JsonBuf *p = realloc(l->s, cap * sizeof *p);
		if (!p)
			return NULL;
		l->s = p;
		l->cap = cap;
	}
	JsonBuf *b = &l->s[l->n++];
	memset(b, 0, sizeof *b);
	return b;
}

static void strlist_free(StrList *l)
{
	for (size_t i = 0; i < l->n; i++)
		json_buf_free(&l->s[i]);
	free(l->s);
	memset(l, 0, sizeof *l);
}

/* Appends s[0..n) with each invalid UTF-8 sequence replaced by U+FFFD, the way
 * Rust's String::from_utf8_lossy does (one replacement per maximal invalid
 * prefix of a sequence). */
static void put_lossy(JsonBuf *o, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t cl =
		    utf8proc_iterate(u + i, (utf8proc_ssize_t)(n - i), &cp);
		if (cl > 0) {
			json_buf_put(o, s + i, (size_t)cl);
			i += (size_t)cl;
			continue;
		}
		size_t need = u[i] >= 0xF0 ? 4 : u[i] >= 0xE0 ? 3 : u[i] >= 0xC2 ? 2 : 1;
		size_t k = 1;
		if (u[i] >= 0xC2 && u[i] <= 0xF4)
			for (; k < need && i + k < n && (u[i + k] & 0xC0) == 0x80; k++) {
				if (k == 1 && ((u[i] == 0xE0 && u[i + 1] < 0xA0) ||
				               (u[i] == 0xED && u[i + 1] > 0x9F) ||
				               (u[i] == 0xF0 && u[i + 1] < 0x90) ||
				               (u[i] == 0xF4 && u[i + 1] > 0x8F)))
					break;
			}
		json_buf_puts(o, "\xef\xbf\xbd");
		i += k;
	}
}

static int is_byte_token(const JsonBuf *b, unsigned *val)
{
	if (b->len != 6 || memcmp(b->p, "<0x", 3) != 0 || b->p[5] != '>')
		return 0;
	unsigned v = 0;
	for (int i = 3; i < 5; i++) {
		char c = b->p[i];
		v = v * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
		                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
		                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
		                                               : 99);
	}
	if (v > 255)
		return 0;
	*val = v;
	return 1;
}

static void replace_all(JsonBuf *o, const JsonBuf *in, const char *a, size_t alen,
                        const char *b, size_t blen)
{
	for (size_t i = 0; i < in->len;) {
		if (alen && in->len - i >= alen && memcmp(in->p + i, a, alen) == 0) {
			json_buf_put(o, b, blen);
			i += alen;
		} else {
			json_buf_put(o, in->p + i, 1);
			i++;
		}
	}
}

static int decode_step(const Dec *d, StrList *in, StrList *out)
{
	if (d->kind == DEC_BYTELEVEL || d->kind == DEC_FUSE) {
		JsonBuf raw = {0}, *o = strlist_add(out);
		if (!o)
			return TRL_ENOMEM;
		for (size_t i = 0; i < in->n; i++) {
			const JsonBuf *t = &in->s[i];
			if (d->kind == DEC_FUSE) {
				json_buf_put(o, t->p, t->len);
				continue;
			}
			size_t start = raw.len, j = 0;
			while (j < t->len) {
				uint32_t cp;
				j += utf8_decode((const unsigned char *)t->p + j,
				                 t->len - j, &cp);
				int byte = bpe_char_byte(cp);
				if (byte < 0)
					break;
				char c = (char)byte;
				json_buf_put(&raw, &c, 1);
			}
			if (j < t->len ||
			    (j == t->len && raw.len - start == 0 && t->len > 0)) {
				raw.len =
				    start; /* not byte-level text: keep it as it is */
				json_buf_put(&raw, t->p, t->len);
			}
		}
		if (d->kind == DEC_BYTELEVEL)
			put_lossy(o, raw.p ? raw.p : "", raw.len);
		json_buf_free(&raw);
		if (d->kind == DEC_FUSE && !o->p)
			json_buf_put(o, "", 0);
		return raw.oom || o->oom ? TRL_ENOMEM : 0;
	}
	if (d->kind == DEC_BYTEFALLBACK) {
		JsonBuf bytes = {0};
		size_t nbytes = 0;
		for (size_t i = 0; i <= in->n; i++) {
			unsigned v;
			if (i < in->n && is_byte_token(&in->s[i], &v)) {
				char c = (char)v;
				json_buf_put(&bytes, &c, 1);
				nbytes++;
				continue;
			}
			if (nbytes) {
				JsonBuf *o = strlist_add(out);
				if (!o)
					return TRL_ENOMEM;
				if (utf8_invalid_at(bytes.p, bytes.len) == bytes.len)
					json_buf_put(o, bytes.p, bytes.len);
				else
					for (size_t k = 0; k < nbytes; k++)
						json_buf_puts(o, "\xef\xbf\xbd");
				bytes.len = 0;
				nbytes = 0;
			}
			if (i < in->n) {
				JsonBuf *o = strlist_add(out);
				if (!o)
					return TRL_ENOMEM;
				json_buf_put(o, in->s[i].p, in->s[i].len);
			}
		}
		json_buf_free(&bytes);
		return 0;
	}
	for (size_t i = 0; i < in->n; i++) {
		const JsonBuf *t = &in->s[i];
		JsonBuf *o = strlist_add(out);
		if (!o)
			return TRL_ENOMEM;
		if (d->kind == DEC_REPLACE) {
			replace_all(o, t, d->a, d->alen, d->b, d->blen);
		} else if (d->kind == DEC_METASPACE) {
			JsonBuf tmp = {0};
			replace_all(&tmp, t, d->a, d->alen, " ", 1);
			size_t skip =
			    i == 0 && d->prepend && tmp.len > 0 && tmp.p[0] == ' ';
			json_buf_put(o, tmp.p ? tmp.p + skip : "", tmp.len - skip);
			json_buf_free(&tmp);
		} else {
			size_t b = 0, e = t->len;
			for (int k = 0; k < d->start && e - b >= d->alen &&
			                memcmp(t->p + b, d->a, d->alen) == 0;
			     k++)
				b += d->alen;
			for (int k = 0; k < d->stop && e - b >= d->alen &&
			                memcmp(t->p + e - d->alen, d->a, d->alen) == 0;
			     k++)
				e -= d->alen;
			json_buf_put(o, t->p ? t->p + b : "", e - b);
		}
		if (o->oom)
			return TRL_ENOMEM;
	}
	return 0;
}

size_t tokenizer_hf_decode(const Tokenizer *t, const int32_t *ids, int n,
                           int skip_special, char *buf, size_t cap)
{
	const TokHF *h = t->hf;
	StrList a = {0}, b = {0};
	JsonBuf text = {0};
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		size_t len;
		const char *s = bpe_token(&h->bpe, ids[i], &len);
		if (!s || (skip_special && h->special[ids[i]]))
			continue;
		JsonBuf *o = strlist_add(&a);
		if (!o)
			rc = TRL_ENOMEM;
		else
			json_buf_put(o, s, len);
	}
	for (int k = 0; k < h->n_dec && rc == 0; k++) {
		rc = decode_step(&h->dec[k], &a, &b);
		strlist_free(&a);
		a = b;
		memset(&b, 0, sizeof b);
	}
	for (size_t i = 0; i < a.n && rc == 0; i++)
		json_buf_put(&text, a.s[i].p ? a.s[i].p : "", a.s[i].len);
	strlist_free(&a);
	strlist_free(&b);
	size_t len = rc == 0 && !text.oom ? text.len : 0;
	if (cap > 0) {
		size_t k = len < cap - 1 ? len : cap - 1;
		if (k)
			memcpy(buf, text.p, k);
		buf[k] = 0;
	}
	json_buf_free(&text);
	return len;
}
