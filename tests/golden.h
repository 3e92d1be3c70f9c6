/* golden.h - reading the PyTorch oracles' golden files in the loss tests.
 *
 * Usage: root = golden_load("losses_golden.json") finds tests/data/NAME in the
 * source tree and parses it; golden_cases(root, "dpo", ...) picks the cases of
 * one kind, each {"kind", "name", "options", "inputs", "expected"}; golden_num
 * and golden_nums read numbers and arrays out of them; golden_check_value
 * compares a result with the oracle's value, golden_expect with the oracle's
 * expected[key]. The caller frees root with json_free.
 *
 * JSON has no NaN: the oracles write NaN as null, so null reads as NaN and
 * golden_near takes a NaN expectation to be met by a NaN result.
 *
 * Every check is a Criterion assertion naming the case and key; a malformed
 * golden file fails the test that reads it. Everything here is static: include
 * it from exactly the tests that use it.
 */
#ifndef TRL_TESTS_GOLDEN_H
#define TRL_TESTS_GOLDEN_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* The golden values are float64 torch results; the C code follows the same
 * formulas in double in a different order, so they agree to rounding,
 * amplified a little by cancellation. */
#define GOLD_RTOL 1e-9
#define GOLD_ATOL 1e-12

static inline int golden_near(double got, double want, double rtol, double atol)
{
	if (isnan(want))
		return isnan(got);
	return fabs(got - want) <= atol + rtol * fabs(want);
}

/* tests/data/FILE from the source tree: $srcdir (set by make check), then
 * $top_srcdir, then the current and parent directories. */
static inline JsonValue *golden_load(const char *file)
{
	const char *dirs[4] = {getenv("srcdir"), getenv("top_srcdir"), ".", ".."};
	char path[4096];
	for (int i = 0; i < 4; i++) {
		if (!dirs[i])
			continue;
		snprintf(path, sizeof path, "%s/tests/data/%s", dirs[i], file);
		FILE *f = fopen(path, "rb");
		if (!f)
			continue;
		fclose(f);
		JsonValue *root;
		TrlErr err = {0};
		cr_assert_eq(json_load_file(path, &root, &err), 0, "%s", err.msg);
		return root;
	}
	cr_assert_fail("tests/data/%s not found (set srcdir)", file);
	return NULL;
}

/* The golden cases of one kind, at most max of them; fails when there are
 * fewer than min_count. */
static inline int golden_cases(const JsonValue *root, const char *kind,
                               const JsonValue **out, int max, int min_count)
{
	const JsonValue *cases = json_get(root, "cases");
	cr_assert(cases && cases->type == JSON_ARRAY, "golden file has no cases array");
	int n = 0;
	for (size_t i = 0; i < cases->len; i++) {
		const JsonValue *c = json_at(cases, i);
		const char *k = json_str(json_get(c, "kind"));
		cr_assert(k, "case %zu has no kind", i);
		if (strcmp(k, kind) == 0) {
			cr_assert_lt(n, max);
			out[n++] = c;
		}
	}
	cr_assert_geq(n, min_count, "%d %s cases in the golden file, want >= %d", n, kind,
	              min_count);
	return n;
}

/* A number, or NaN for JSON null; name is the case's, key says where v is. */
static inline double golden_numv(const JsonValue *v, const char *name, const char *key)
{
	cr_assert(v, "%s: %s is missing", name, key);
	if (v->type == JSON_NULL)
		return NAN;
	double x;
	cr_assert_eq(json_num(v, &x), 0, "%s: %s is not a number", name, key);
	return x;
}

static inline double golden_num(const JsonValue *obj, const char *key, const char *name)
{
	return golden_numv(json_get(obj, key), name, key);
}

/* Reads obj[key], a flat or (rows, cols) nested array, row-major into out,
 * which holds cap values; returns the element count (-1 when the key is absent
 * or null) and, when rows is not NULL, the row count in *rows. */
static inline int golden_nums(const JsonValue *obj, const char *key, double *out, int cap,
                              int *rows, const char *name)
{
	const JsonValue *a = json_get(obj, key);
	if (!a || a->type == JSON_NULL)
		return -1;
	cr_assert_eq(a->type, JSON_ARRAY, "%s: %s is not an array", name, key);
	if (rows)
		*rows = (int)a->len;
	int count = 0;
	for (size_t i = 0; i < a->len; i++) {
		const JsonValue *e = json_at(a, i);
		int nested = e->type == JSON_ARRAY;
		size_t m = nested ? e->len : 1;
		for (size_t j = 0; j < m; j++) {
			cr_assert_lt(count, cap, "%s: %s is longer than %d", name, key,
			             cap);
			out[count++] = golden_numv(nested ? json_at(e, j) : e, name, key);
		}
	}
	return count;
}

/* One scalar result against the oracle's, to GOLD_RTOL and GOLD_ATOL. */
static inline void golden_check_value(const char *name, const char *what, double got,
                                      double want)
{
	cr_expect(golden_near(got, want, GOLD_RTOL, GOLD_ATOL),
	          "%s: %s = %.17g, oracle %.17g", name, what, got, want);
}

/* got against the oracle's expected[key], the result named key in messages. */
static inline void golden_expect(const char *name, const JsonValue *expected,
                                 const char *key, double got)
{
	golden_check_value(name, key, got, golden_num(expected, key, name));
}

#endif
