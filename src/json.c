/* json.c - a strict recursive-descent JSON parser into an arena, and JsonBuf. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The arena: a list of chunks; allocations are 8-byte aligned and never freed
 * one by one. */
typedef struct Chunk {
	struct Chunk *next;
	size_t size;
	max_align_t data[];
} Chunk;

typedef struct Arena {
	Chunk *head;
	char *cur;
	size_t left;
	size_t next_size;
} Arena;

/* The root handed to the caller sits inside the document, so json_free can find
 * the arena from the root pointer alone. */
typedef struct JsonDoc {
	Arena arena;
	JsonValue root;
} JsonDoc;

static void *arena_alloc(Arena *a, size_t n)
{
	n = (n + 7) & ~(size_t)7;
	if (n > a->left) {
		size_t size = a->next_size;
		if (size < n)
			size = n;
		Chunk *c = malloc(sizeof(Chunk) + size);
		if (!c)
			return NULL;
		c->next = a->head;
		c->size = size;
		a->head = c;
		a->cur = (char *)c->data;
		a->left = size;
		if (a->next_size < ((size_t)4 << 20))
			a->next_size *= 2;
	}
	void *p = a->cur;
	a->cur += n;
	a->left -= n;
	return p;
}

static void arena_free(Arena *a)
{
	Chunk *c = a->head;
	while (c) {
		Chunk *next = c->next;
		free(c);
		c = next;
	}
	memset(a, 0, sizeof *a);
}

typedef struct Parser {
	const unsigned char *s;   /* start of the text */
	const unsigned char *end; /* one past its last byte */
	const unsigned char *p;   /* the next byte to read */
	Arena *arena;
	JsonValue *vstack; /* items of the arrays being parsed */
	size_t vn, vcap;
	JsonMember *mstack; /* members of the objects being parsed */
	size_t mn, mcap;
	int depth;
	int code;
	const unsigned char *err_at;
	char msg[160];
} Parser;

static int fail_at(Parser *ps, const unsigned char *at, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(Parser *ps, const unsigned char *at, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ps->msg, sizeof ps->msg, fmt, ap);
	va_end(ap);
	ps->err_at = at;
	ps->code = code;
	return code;
}

static int fail_oom(Parser *ps)
{
	return fail_at(ps, ps->p, TRL_ENOMEM, "out of memory while parsing JSON");
}

/* Describes the byte at p for an error message: 'x', "byte 0xNN" or the end. */
static const char *describe(const Parser *ps, const unsigned char *p, char *buf,
                            size_t cap)
{
	if (p >= ps->end)
		snprintf(buf, cap, "end of input");
	else if (*p >= 0x20 && *p < 0x7f)
		snprintf(buf, cap, "'%c'", *p);
	else
		snprintf(buf, cap, "byte 0x%02X", *p);
	return buf;
}

static void skip_ws(Parser *ps)
{
	const unsigned char *p = ps->p, *end = ps->end;
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
		p++;
	ps->p = p;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads the four hex digits after "\u" at p; -1 when they are not hex. */
static long read_hex4(const Parser *ps, const unsigned char *p)
{
	if (ps->end - p < 4)
		return -1;
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

static size_t utf8_put(unsigned char *o, unsigned long cp)
{
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xC0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xE0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (unsigned char)(0xF0 | (cp >> 18));
	o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Length of the valid UTF-8 sequence of two or more bytes starting at p (RFC
 * 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_valid_len(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if ((size_t)(end - p) < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return n;
}

/* Parses the string whose opening quote is at ps->p into a fresh arena copy. */
static int parse_string(Parser *ps, const char **out, size_t *out_len)
{
	const unsigned char *start = ps->p + 1, *end = ps->end, *q = start;
	/* First pass: find the closing quote. Decoding never makes a string longer,
	 * so its span bounds the decoded size. */
	while (q < end && *q != '"')
		q += (*q == '\\' && end - q >= 2) ? 2 : 1;
	if (q >= end)
		return fail_at(ps, ps->p, TRL_EFORMAT, "unterminated string");
	unsigned char *o = arena_alloc(ps->arena, (size_t)(q - start) + 1);
	if (!o)
		return fail_oom(ps);
	unsigned char *o0 = o;
	const unsigned char *p = start;
	while (p < q) {
		unsigned char c = *p;
		if (c >= 0x20 && c < 0x80 && c != '\\') {
			*o++ = c;
			p++;
		} else if (c < 0x20) {
			return fail_at(
			    ps, p, TRL_EFORMAT,
			    "raw control character 0x%02X in a string (write it as "
			    "an escape such as \\n or \\u%04X)",
			    c, c);
		} else if (c >= 0x80) {
			size_t n = utf8_valid_len(p, q);
			if (n == 0)
				return fail_at(ps, p, TRL_EFORMAT,
				               "invalid UTF-8 byte 0x%02X in a string",
				               c);
			memcpy(o, p, n);
			o += n;
			p += n;
		} else {
			unsigned char e = p[1];
			switch (e) {
			case '"':
			case '\\':
			case '/':
				*o++ = e;
				break;
			case 'b':
				*o++ = '\b';
				break;
			case 'f':
				*o++ = '\f';
				break;
			case 'n':
				*o++ = '\n';
				break;
			case 'r':
				*o++ = '\r';
				break;
			case 't':
				*o++ = '\t';
				break;
			case 'u': {
				long cp = read_hex4(ps, p + 2);
				if (cp < 0)
					return fail_at(
					    ps, p, TRL_EFORMAT,
					    "invalid \\u escape (expected four hex "
					    "digits)");
				if (cp >= 0xDC00 && cp <= 0xDFFF)
					return fail_at(ps, p, TRL_EFORMAT,
					               "unpaired low surrogate \\u%04lX",
					               cp);
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					long lo = -1;
					if (q - p >= 12 && p[6] == '\\' && p[7] == 'u')
						lo = read_hex4(ps, p + 8);
					if (lo < 0xDC00 || lo > 0xDFFF)
						return fail_at(
						    ps, p, TRL_EFORMAT,
						    "unpaired high surrogate "
						    "\\u%04lX (it must be followed "
						    "by a low surrogate \\uDC00 to "
						    "\\uDFFF)",
						    cp);
					cp = 0x10000 + ((cp - 0xD800) << 10) +
					     (lo - 0xDC00);
					p += 6;
				}
				o += utf8_put(o, (unsigned long)cp);
				p += 4;
				break;
			}
			default: {
				char d[24];
				return fail_at(ps, p, TRL_EFORMAT,
				               "invalid escape after '\\': %s",
				               describe(ps, p + 1, d, sizeof d));
			}
			}
			p += 2;
		}
	}
	*o = 0;
	*out = (const char *)o0;
	*out_len = (size_t)(o - o0);
	ps->p = q + 1;
	return 0;
}

static int is_digit(const unsigned char *p, const unsigned char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

static int parse_number(Parser *ps, JsonValue *v)
{
	const unsigned char *start = ps->p, *p = start, *end = ps->end;
	int integral = 1;
	if (*p == '-')
		p++;
	if (!is_digit(p, end))
		return fail_at(ps, p, TRL_EFORMAT,
		               "invalid number: expected a digit after '-'");
	if (*p == '0' && is_digit(p + 1, end))
		return fail_at(ps, start, TRL_EFORMAT,
		               "invalid number: leading zeros are not allowed");
	while (is_digit(p, end))
		p++;
	if (p < end && *p == '.') {
		integral = 0;
		p++;
		if (!is_digit(p, end))
			return fail_at(ps, p, TRL_EFORMAT,
			               "invalid number: expected a digit after '.'");
		while (is_digit(p, end))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		integral = 0;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!is_digit(p, end))
			return fail_at(
			    ps, p, TRL_EFORMAT,
			    "invalid number: expected a digit in the exponent");
		while (is_digit(p, end))
			p++;
	}
	v->type = JSON_NUMBER;
	v->is_int = 0;
	if (integral) {
		/* Exact int64 accumulation, negative so that INT64_MIN fits. */
		const unsigned char *d = start + (*start == '-');
		int64_t acc = 0;
		int ok = 1;
		for (; d < p && ok; d++)
			ok = !__builtin_mul_overflow(acc, 10, &acc) &&
			     !__builtin_sub_overflow(acc, *d - '0', &acc);
		if (ok && *start != '-' && acc == INT64_MIN)
			ok = 0;
		if (ok) {
			v->inum = *start == '-' ? acc : -acc;
			v->num = (double)v->inum;
			v->is_int = 1;
			ps->p = p;
			return 0;
		}
	}
	char small[64], *buf = small;
	size_t n = (size_t)(p - start);
	if (n >= sizeof small) {
		buf = malloc(n + 1);
		if (!buf)
			return fail_oom(ps);
	}
	memcpy(buf, start, n);
	buf[n] = 0;
	double x = strtod(buf, NULL);
	if (buf != small)
		free(buf);
	if (isinf(x))
		return fail_at(ps, start, TRL_EFORMAT,
		               "number %.*s%s is out of the range of a double",
		               (int)(n < 40 ? n : 40), (const char *)start,
		               n < 40 ? "" : "...");
	v->num = x;
	v->inum = 0;
	ps->p = p;
	return 0;
}

static int parse_value(Parser *ps, JsonValue *v);

static int push_value(Parser *ps, const JsonValue *v)
{
	if (ps->vn == ps->vcap) {
		size_t cap = ps->vcap ? 2 * ps->vcap : 16;
		JsonValue *s = realloc(ps->vstack, cap * sizeof *s);
		if (!s)
			return fail_oom(ps);
		ps->vstack = s;
		ps->vcap = cap;
	}
	ps->vstack[ps->vn++] = *v;
	return 0;
}

static int push_member(Parser *ps, const JsonMember *m)
{
	if (ps->mn == ps->mcap) {
		size_t cap = ps->mcap ? 2 * ps->mcap : 16;
		JsonMember *s = realloc(ps->mstack, cap * sizeof *s);
		if (!s)
			return fail_oom(ps);
		ps->mstack = s;
		ps->mcap = cap;
	}
	ps->mstack[ps->mn++] = *m;
	return 0;
}

/* Items are collected on a stack shared by all nesting levels (a nested array
 * pops its own items before its parent pushes it), then copied to the arena as
 * one contiguous block. */
static int parse_array(Parser *ps, JsonValue *v)
{
	char d[24];
	size_t base = ps->vn;
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == ']') {
		ps->p++;
	} else {
		for (;;) {
			JsonValue item;
			if (parse_value(ps, &item) < 0 || push_value(ps, &item) < 0)
				return ps->code;
			skip_ws(ps);
			if (ps->p < ps->end && *ps->p == ',') {
				ps->p++;
				skip_ws(ps);
				if (ps->p < ps->end && *ps->p == ']')
					return fail_at(ps, ps->p, TRL_EFORMAT,
					               "trailing comma before ']'");
				continue;
			}
			if (ps->p < ps->end && *ps->p == ']') {
				ps->p++;
				break;
			}
			return fail_at(ps, ps->p, TRL_EFORMAT,
			               "expected ',' or ']' after an array item, got %s",
			               describe(ps, ps->p, d, sizeof d));
		}
	}
	size_t n = ps->vn - base;
	JsonValue *items = NULL;
	if (n) {
		items = arena_alloc(ps->arena, n * sizeof *items);
		if (!items)
			return fail_oom(ps);
		memcpy(items, ps->vstack + base, n * sizeof *items);
	}
	ps->vn = base;
	v->type = JSON_ARRAY;
	v->is_int = 0;
	v->len = n;
	v->items = items;
	return 0;
}

static int parse_object(Parser *ps, JsonValue *v)
{
	char d[24];
	size_t base = ps->mn;
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		ps->p++;
	} else {
		for (;;) {
			JsonMember m;
			if (ps->p >= ps->end || *ps->p != '"')
				return fail_at(
				    ps, ps->p, TRL_EFORMAT,
				    "expected a string as object member name, got %s",
				    describe(ps, ps->p, d, sizeof d));
			if (parse_string(ps, &m.key, &m.key_len) < 0)
				return ps->code;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':')
				return fail_at(
				    ps, ps->p, TRL_EFORMAT,
				    "expected ':' after object member name, got %s",
				    describe(ps, ps->p, d, sizeof d));
			ps->p++;
			if (parse_value(ps, &m.value) < 0 || push_member(ps, &m) < 0)
				return ps->code;
			skip_ws(ps);
			if (ps->p < ps->end && *ps->p == ',') {
				ps->p++;
				skip_ws(ps);
				if (ps->p < ps->end && *ps->p == '}')
					return fail_at(ps, ps->p, TRL_EFORMAT,
					               "trailing comma before '}'");
				continue;
			}
			if (ps->p < ps->end && *ps->p == '}') {
				ps->p++;
				break;
			}
			return fail_at(
			    ps, ps->p, TRL_EFORMAT,
			    "expected ',' or '}' after an object member, got %s",
			    describe(ps, ps->p, d, sizeof d));
		}
	}
	size_t n = ps->mn - base;
	JsonMember *members = NULL;
	if (n) {
		members = arena_alloc(ps->arena, n * sizeof *members);
		if (!members)
			return fail_oom(ps);
		memcpy(members, ps->mstack + base, n * sizeof *members);
	}
	ps->mn = base;
	v->type = JSON_OBJECT;
	v->is_int = 0;
	v->len = n;
	v->members = members;
	return 0;
}

static int parse_literal(Parser *ps, JsonValue *v, const char *word, JsonType type,
                         int boolean)
{
	size_t n = strlen(word);
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return fail_at(ps, ps->p, TRL_EFORMAT,
		               "invalid literal (expected true, false or null)");
	ps->p += n;
	v->type = type;
	v->is_int = 0;
	v->len = 0;
	v->boolean = boolean;
	return 0;
}

static int parse_value(Parser *ps, JsonValue *v)
{
	char d[24];
	memset(v, 0, sizeof *v);
	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail_at(ps, ps->p, TRL_EFORMAT,
		               "unexpected end of input (expected a value)");
	int rc;
	switch (*ps->p) {
	case '{':
	case '[':
		if (++ps->depth > JSON_MAX_DEPTH)
			return fail_at(ps, ps->p, TRL_EFORMAT,
			               "nesting deeper than %d levels", JSON_MAX_DEPTH);
		rc = *ps->p == '{' ? parse_object(ps, v) : parse_array(ps, v);
		ps->depth--;
		return rc;
	case '"':
		v->type = JSON_STRING;
		return parse_string(ps, &v->str, &v->len);
	case 't':
		return parse_literal(ps, v, "true", JSON_BOOL, 1);
	case 'f':
		return parse_literal(ps, v, "false", JSON_BOOL, 0);
	case 'n':
		return parse_literal(ps, v, "null", JSON_NULL, 0);
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			return parse_number(ps, v);
		return fail_at(ps, ps->p, TRL_EFORMAT, "unexpected %s (expected a value)",
		               describe(ps, ps->p, d, sizeof d));
	}
}

static void locate(const Parser *ps, JsonError *e)
{
	const unsigned char *at = ps->err_at ? ps->err_at : ps->p;
	if (at > ps->end)
		at = ps->end;
	int line = 1;
	const unsigned char *line_start = ps->s;
	for (const unsigned char *q = ps->s; q < at; q++)
		if (*q == '\n') {
			line++;
			line_start = q + 1;
		}
	e->offset = (size_t)(at - ps->s);
	e->line = line;
	e->column = (int)(at - line_start) + 1;
	snprintf(e->msg, sizeof e->msg, "%s", ps->msg);
}

int json_parse(const char *text, size_t len, JsonValue **out, JsonError *e)
{
	*out = NULL;
	JsonDoc *doc = calloc(1, sizeof *doc);
	if (!doc) {
		if (e) {
			memset(e, 0, sizeof *e);
			e->line = e->column = 1;
			snprintf(e->msg, sizeof e->msg,
			         "out of memory while parsing JSON");
		}
		return TRL_ENOMEM;
	}
	/* Small documents (JSONL rows) get one small chunk; large ones grow
	 * geometrically. */
	doc->arena.next_size =
	    len < 1024 ? 1024 : (len < (1 << 20) ? 2 * len : (1 << 21));
	Parser ps = {0};
	ps.s = (const unsigned char *)text;
	ps.end = ps.s + len;
	ps.p = ps.s;
	ps.arena = &doc->arena;
	char d[24];
	int rc = 0;
	skip_ws(&ps);
	if (ps.p >= ps.end)
		rc = fail_at(&ps, ps.p, TRL_EFORMAT,
		             "empty input (expected a JSON value)");
	else if (parse_value(&ps, &doc->root) < 0)
		rc = ps.code;
	else {
		skip_ws(&ps);
		if (ps.p < ps.end)
			rc = fail_at(&ps, ps.p, TRL_EFORMAT,
			             "unexpected %s after the JSON value",
			             describe(&ps, ps.p, d, sizeof d));
	}
	free(ps.vstack);
	free(ps.mstack);
	if (rc < 0) {
		if (e)
			locate(&ps, e);
		arena_free(&doc->arena);
		free(doc);
		return rc;
	}
	*out = &doc->root;
	return 0;
}

int json_load_file(const char *path, JsonValue **out, TrlErr *err)
{
	*out = NULL;
	char *buf;
	size_t len;
	int rc0 = trl_read_file(path, &buf, &len, err);
	if (rc0)
		return rc0;
	JsonError je;
	int rc = json_parse(buf, len, out, &je);
	trl_free(buf);
	if (rc < 0)
		return trl_errf(err, rc, "%s:%d:%d: %s", path, je.line, je.column,
		                je.msg);
	return 0;
}

void json_free(JsonValue *root)
{
	if (!root)
		return;
	JsonDoc *doc = (JsonDoc *)((char *)root - offsetof(JsonDoc, root));
	arena_free(&doc->arena);
	free(doc);
}

const JsonValue *json_get(const JsonValue *obj, const char *key)
{
	if (!obj || obj->type != JSON_OBJECT)
		return NULL;
	size_t n = strlen(key);
	for (size_t i = obj->len; i-- > 0;) {
		const JsonMember *m = &obj->members[i];
		if (m->key_len == n && memcmp(m->key, key, n) == 0)
			return &m->value;
	}
	return NULL;
}

const JsonValue *json_at(const JsonValue *arr, size_t i)
{
	if (!arr || arr->type != JSON_ARRAY || i >= arr->len)
		return NULL;
	return &arr->items[i];
}

const char *json_type_name(JsonType t)
{
	switch (t) {
	case JSON_NULL:
		return "null";
	case JSON_BOOL:
		return "boolean";
	case JSON_NUMBER:
		return "number";
	case JSON_STRING:
		return "string";
	case JSON_ARRAY:
		return "array";
	case JSON_OBJECT:
		return "object";
	}
	return "unknown";
}

const char *json_str(const JsonValue *v)
{
	return v && v->type == JSON_STRING ? v->str : NULL;
}

int json_num(const JsonValue *v, double *out)
{
	if (!v || v->type != JSON_NUMBER)
		return -1;
	*out = v->num;
	return 0;
}

int json_int(const JsonValue *v, int64_t *out)
{
	if (!v || v->type != JSON_NUMBER)
		return -1;
	if (v->is_int) {
		*out = v->inum;
		return 0;
	}
	if (v->num == floor(v->num) && fabs(v->num) < 9007199254740992.0) {
		*out = (int64_t)v->num;
		return 0;
	}
	return -1;
}

static int buf_reserve(JsonBuf *b, size_t extra)
{
	if (b->oom)
		return -1;
	if (b->len + extra + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void json_buf_put(JsonBuf *b, const char *s, size_t n)
{
	/* s may point into b itself (a piece of the buffer appended again):
	 * growing the buffer would free it, so keep its offset and re-derive. */
	int inside = b->p && s >= b->p && s < b->p + b->cap;
	size_t off = inside ? (size_t)(s - b->p) : 0;
	if (buf_reserve(b, n) < 0)
		return;
	if (inside)
		s = b->p + off;
	memmove(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

void json_buf_puts(JsonBuf *b, const char *s)
{
	json_buf_put(b, s, strlen(s));
}

void json_buf_printf(JsonBuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || buf_reserve(b, (size_t)n) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void json_buf_string(JsonBuf *b, const char *s, size_t n)
{
	/* Worst case: every byte becomes a six-byte \u00XX escape. */
	if (buf_reserve(b, 6 * n + 2) < 0)
		return;
	char *o = b->p + b->len;
	*o++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			*o++ = '\\';
			*o++ = (char)c;
		} else if (c == '\n') {
			*o++ = '\\';
			*o++ = 'n';
		} else if (c == '\t') {
			*o++ = '\\';
			*o++ = 't';
		} else if (c == '\r') {
			*o++ = '\\';
			*o++ = 'r';
		} else if (c < 0x20) {
			static const char hex[] = "0123456789abcdef";
			memcpy(o, "\\u00", 4);
			o[4] = hex[c >> 4];
			o[5] = hex[c & 15];
			o += 6;
		} else {
			*o++ = (char)c;
		}
	}
	*o++ = '"';
	*o = 0;
	b->len = (size_t)(o - b->p);
}

void json_buf_free(JsonBuf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}
