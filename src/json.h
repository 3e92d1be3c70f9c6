/* json.h - a strict JSON (RFC 8259) parser into a read-only tree, and a growable
 * buffer for writing JSON.
 *
 * Usage:
 *     JsonValue *root;
 *     JsonError je;
 *     if (json_parse(text, len, &root, &je) < 0)
 *             ... je.line, je.column (1-based, in bytes) and je.msg say what and where
 *     int64_t n;
 *     if (json_int(json_get(root, "vocab_size"), &n) < 0) ...
 *     json_free(root);
 *
 * Ownership: every node and decoded string lives in one arena owned by the root
 * that json_parse returns; json_free(root) releases all of it, and nothing inside
 * the tree may be freed on its own.
 *
 * Strictness: exactly one value surrounded by optional whitespace; no comments,
 * trailing commas, NaN or Infinity; strings must be valid UTF-8 without raw
 * control characters; escapes (including \uXXXX surrogate pairs) are decoded to
 * UTF-8. Nesting deeper than JSON_MAX_DEPTH is an error, not a stack overflow.
 *
 * Values: strings are NUL-terminated but may contain NUL bytes (from \u0000), so
 * len is authoritative. Objects keep their members in document order; duplicate
 * names are kept and json_get returns the last one, as Python's json module does.
 * A number always has num (the nearest double); is_int is set when the literal
 * has no fraction or exponent and fits in int64, and then inum is exact. Number
 * conversion uses strtod, which assumes the "C" numeric locale.
 */
#ifndef TRL_JSON_H
#define TRL_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "trl.h"

#define JSON_MAX_DEPTH 512

typedef enum {
	JSON_NULL = 0,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT
} JsonType;

typedef struct JsonValue JsonValue;
typedef struct JsonMember JsonMember;

struct JsonValue {
	JsonType type;
	int is_int; /* number: integral literal that fits in int64 */
	size_t len; /* string: bytes; array: items; object: members */
	union {
		int boolean;
		struct {
			double num;
			int64_t inum; /* exact when is_int */
		};
		const char *str;           /* (len + 1), NUL-terminated */
		const JsonValue *items;    /* (len) */
		const JsonMember *members; /* (len), in document order */
	};
};

struct JsonMember {
	const char *key; /* decoded like a string value */
	size_t key_len;
	JsonValue value;
};

typedef struct JsonError {
	size_t offset; /* byte offset of the problem in the text */
	int line;      /* 1-based */
	int column;    /* 1-based byte column within the line */
	char msg[160]; /* what is wrong, without the position */
} JsonError;

/* Parses text[0..len) (which need not be NUL-terminated). On success *out is the
 * root, to be released with json_free. On failure returns TRL_EFORMAT (or
 * TRL_ENOMEM), sets *out to NULL and fills e (if not NULL). */
int json_parse(const char *text, size_t len, JsonValue **out, JsonError *e);

/* Reads and parses a whole file; errors read "path:line:column: problem". */
int json_load_file(const char *path, JsonValue **out, TrlErr *err);

/* Releases a tree returned by json_parse or json_load_file; NULL is a no-op. */
void json_free(JsonValue *root);

/* The last member named key of an object; NULL when obj is NULL, not an object,
 * or has no such member. */
const JsonValue *json_get(const JsonValue *obj, const char *key);
/* Item i of an array; NULL when arr is not an array or i is out of range. */
const JsonValue *json_at(const JsonValue *arr, size_t i);

/* "null", "boolean", "number", "string", "array" or "object", for messages. */
const char *json_type_name(JsonType t);

/* Typed reads. Each returns the value, or fails (NULL / -1) when v is NULL or of
 * another type. json_int also accepts a number like 2e3 whose value is an
 * integer of magnitude below 2^53. */
const char *json_str(const JsonValue *v);
int json_num(const JsonValue *v, double *out);
int json_int(const JsonValue *v, int64_t *out);

/* A growable text buffer for writing JSON. Zero-initialise it; an allocation
 * failure sets oom and later appends do nothing, so check oom once at the end.
 * p is NUL-terminated whenever len > 0. Release with json_buf_free. */
typedef struct JsonBuf {
	char *p;
	size_t len, cap;
	int oom;
} JsonBuf;

/* Appends s[0..n); s may point into b's own buffer. */
void json_buf_put(JsonBuf *b, const char *s, size_t n);
void json_buf_puts(JsonBuf *b, const char *s);
void json_buf_printf(JsonBuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s[0..n) as a quoted JSON string, escaping '"', '\\' and control
 * characters; other bytes (UTF-8) are copied as they are. */
void json_buf_string(JsonBuf *b, const char *s, size_t n);
void json_buf_free(JsonBuf *b);

#endif
