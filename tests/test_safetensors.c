/* test_safetensors.c - safetensors round trips, layout, and corrupt files. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "rng.h"
#include "safetensors.h"

static char tmp_path[64];

/* A fresh empty file name under /tmp for the test; removed by the fixture. */
static void tmp_init(void)
{
	snprintf(tmp_path, sizeof tmp_path, "/tmp/trl_st_XXXXXX");
	int fd = mkstemp(tmp_path);
	cr_assert_geq(fd, 0);
	close(fd);
}

static void tmp_fini(void)
{
	char tmp[80];
	snprintf(tmp, sizeof tmp, "%s.tmp", tmp_path);
	unlink(tmp_path);
	unlink(tmp);
}

TestSuite(safetensors, .init = tmp_init, .fini = tmp_fini);

static StTensor tensor(const char *name, StDtype dt, int ndim, const int64_t *shape,
                       const void *data, size_t nbytes)
{
	StTensor t;
	memset(&t, 0, sizeof t);
	snprintf(t.name, sizeof t.name, "%s", name);
	t.dtype = dt;
	t.ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t.shape[i] = shape[i];
	t.data = data;
	t.nbytes = nbytes;
	return t;
}

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	*n = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *b = malloc(*n + 1);
	cr_assert_eq(fread(b, 1, *n, f), *n);
	fclose(f);
	return b;
}

static void spit(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, n, f), n);
	fclose(f);
}

Test(safetensors, round_trip_of_every_dtype_scalar_and_metadata)
{
	float f32[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
	int32_t i32[4] = {1, -1, INT32_MAX, INT32_MIN};
	int64_t i64[4] = {INT64_MIN, 0, 42, INT64_MAX};
	uint16_t f16[3] = {0x3C00, 0xC000, 0x7BFF};
	uint16_t bf16[2] = {0x3F80, 0xBF80};
	double f64 = 3.141592653589793;
	int64_t s23[2] = {2, 3}, s4[1] = {4}, s22[2] = {2, 2}, s3[1] = {3},
	        s21[2] = {2, 1}, s04[2] = {0, 4};
	StTensor t[7] = {
	    tensor("model.layers.0.w", ST_F32, 2, s23, f32, sizeof f32),
	    tensor("ints", ST_I32, 1, s4, i32, sizeof i32),
	    tensor("longs", ST_I64, 2, s22, i64, sizeof i64),
	    tensor("half", ST_F16, 1, s3, f16, sizeof f16),
	    tensor("brain \"quoted\" name", ST_BF16, 2, s21, bf16, sizeof bf16),
	    tensor("step", ST_F64, 0, NULL, &f64, sizeof f64),
	    tensor("empty", ST_F32, 2, s04, NULL, 0),
	};
	const char *meta[] = {"format", "pt", "note", "tab\tquote\" nl\n \xC3\xA9"};
	TrlErr err = {0};
	cr_assert_eq(st_write(tmp_path, t, 7, meta, 2, &err), 0, "%s", err.msg);

	StFile f;
	cr_assert_eq(st_open(&f, tmp_path, &err), 0, "%s", err.msg);
	cr_assert_eq(f.n, 7);
	for (int i = 0; i < 7; i++) {
		const StTensor *r = &f.t[i];
		cr_assert_str_eq(r->name, t[i].name, "order is kept");
		cr_assert_eq(r->dtype, t[i].dtype);
		cr_assert_eq(r->ndim, t[i].ndim);
		for (int d = 0; d < r->ndim; d++)
			cr_assert_eq(r->shape[d], t[i].shape[d]);
		cr_assert_eq(r->nbytes, t[i].nbytes);
		if (r->nbytes)
			cr_assert_eq(memcmp(r->data, t[i].data, r->nbytes), 0,
			             "tensor %s", r->name);
		cr_assert_eq(st_find(&f, t[i].name), r);
	}
	cr_assert_eq(st_find(&f, "step")->ndim, 0, "a scalar has ndim 0");
	/* The scalar follows odd-sized tensors, so it may be unaligned: copy it. */
	double step;
	memcpy(&step, st_find(&f, "step")->data, sizeof step);
	cr_assert_eq(step, f64);
	cr_assert_null(st_find(&f, "missing"));
	cr_assert_eq(f.n_meta, 2);
	cr_assert_str_eq(st_meta(&f, "format"), "pt");
	cr_assert_str_eq(st_meta(&f, "note"), meta[3]);
	cr_assert_null(st_meta(&f, "nope"));
	st_close(&f);
	cr_assert_null(f.image);
	st_close(&f);
	StFile z = {0};
	st_close(&z);
	char tmp[80];
	snprintf(tmp, sizeof tmp, "%s.tmp", tmp_path);
	cr_assert_neq(access(tmp, F_OK), 0, "the temporary file was renamed");
}

Test(safetensors, header_layout_is_aligned_and_in_the_given_order)
{
	float x[2] = {1, 2};
	int64_t s2[1] = {2};
	/* Names of every length mod 8 exercise every amount of padding. */
	for (int len = 1; len <= 16; len++) {
		char name[32];
		memset(name, 'a', (size_t)len);
		name[len] = 0;
		StTensor t[2] = {tensor("zeta", ST_F32, 1, s2, x, sizeof x),
		                 tensor(name, ST_F32, 1, s2, x, sizeof x)};
		TrlErr err;
		cr_assert_eq(st_write(tmp_path, t, 2, NULL, 0, &err), 0, "%s", err.msg);
		size_t n;
		unsigned char *b = slurp(tmp_path, &n);
		uint64_t hlen = 0;
		for (int i = 0; i < 8; i++)
			hlen |= (uint64_t)b[i] << (8 * i);
		cr_assert_eq((8 + hlen) % 8, 0, "data start %llu is not 8-byte aligned",
		             (unsigned long long)(8 + hlen));
		cr_assert_eq(n, 8 + hlen + 2 * sizeof x);
		size_t end = 8 + hlen;
		while (end > 8 && b[end - 1] == ' ')
			end--;
		cr_assert_eq(b[end - 1], '}', "only spaces pad the header");
		cr_assert_lt(8 + hlen - end, 8);
		cr_assert_eq(memcmp(b + 8 + hlen, x, sizeof x), 0);
		JsonValue *h;
		JsonError je;
		cr_assert_eq(json_parse((const char *)b + 8, hlen, &h, &je), 0, "%s",
		             je.msg);
		cr_assert_null(json_get(h, "__metadata__"),
		               "no metadata object when n_meta = 0");
		cr_assert_eq(h->len, 2);
		cr_assert_str_eq(h->members[0].key, "zeta",
		                 "tensors keep the given order");
		const JsonValue *off = json_get(json_get(h, name), "data_offsets");
		cr_assert_eq(off->items[0].inum, 8,
		             "offsets are relative to the data start");
		cr_assert_eq(off->items[1].inum, 16);
		json_free(h);
		free(b);
	}
}

Test(safetensors, writer_rejects_bad_tensors_and_paths)
{
	float x[4] = {0};
	int64_t s22[2] = {2, 2}, s3[1] = {3};
	TrlErr err;
	StTensor bad = tensor("x", ST_F32, 1, s3, x, sizeof x);
	cr_assert_eq(st_write(tmp_path, &bad, 1, NULL, 0, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "tensor 'x': nbytes 16 do not match shape [3] of F32"),
	          "%s", err.msg);
	StTensor dup[2] = {tensor("x", ST_F32, 2, s22, x, sizeof x),
	                   tensor("x", ST_F32, 2, s22, x, sizeof x)};
	cr_assert_eq(st_write(tmp_path, dup, 2, NULL, 0, &err), TRL_EINVAL);
	cr_assert(strstr(err.msg, "appears twice"), "%s", err.msg);
	StTensor meta = tensor("__metadata__", ST_F32, 2, s22, x, sizeof x);
	cr_assert_eq(st_write(tmp_path, &meta, 1, NULL, 0, &err), TRL_EINVAL);
	StTensor ok = tensor("x", ST_F32, 2, s22, x, sizeof x);
	cr_assert_eq(
	    st_write("/nonexistent/dir/model.safetensors", &ok, 1, NULL, 0, &err),
	    TRL_EIO);
	cr_assert(strstr(err.msg, "/nonexistent/dir/model.safetensors.tmp") &&
	              strstr(err.msg, "No such file or directory"),
	          "%s", err.msg);
}

Test(safetensors, rewriting_replaces_the_file)
{
	float a[1] = {1}, b[2] = {2, 3};
	int64_t s1[1] = {1}, s2[1] = {2};
	StTensor ta = tensor("a", ST_F32, 1, s1, a, sizeof a);
	StTensor tb = tensor("b", ST_F32, 1, s2, b, sizeof b);
	TrlErr err;
	cr_assert_eq(st_write(tmp_path, &ta, 1, NULL, 0, &err), 0);
	cr_assert_eq(st_write(tmp_path, &tb, 1, NULL, 0, &err), 0);
	StFile f;
	cr_assert_eq(st_open(&f, tmp_path, &err), 0, "%s", err.msg);
	cr_assert_eq(f.n, 1);
	cr_assert_str_eq(f.t[0].name, "b");
	cr_assert_eq(((const float *)f.t[0].data)[1], 3.0f);
	st_close(&f);
}

/* Writes an 8-byte length, the header and data_len zero bytes. */
static void write_raw(const char *path, uint64_t hlen, const char *header,
                      size_t data_len)
{
	size_t h = strlen(header);
	size_t n = 8 + h + data_len;
	unsigned char *b = calloc(n, 1);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(b + 8, header, h);
	spit(path, b, n);
	free(b);
}

static void expect_open_error(int code, const char *part)
{
	StFile f;
	TrlErr err = {0};
	int rc = st_open(&f, tmp_path, &err);
	cr_assert_eq(rc, code, "rc %d, want %d: %s", rc, code, err.msg);
	cr_assert_eq(strncmp(err.msg, tmp_path, strlen(tmp_path)), 0,
	             "names the file: %s", err.msg);
	cr_assert(strstr(err.msg, part), "'%s' lacks '%s'", err.msg, part);
	cr_assert_null(f.image, "a failed open leaves a zeroed StFile");
	cr_assert_null(f.t);
	st_close(&f);
}

static void expect_header_error(const char *header, size_t data_len, int code,
                                const char *part)
{
	write_raw(tmp_path, strlen(header), header, data_len);
	expect_open_error(code, part);
}

Test(safetensors, bad_lengths)
{
	spit(tmp_path, "abc", 3);
	expect_open_error(TRL_EFORMAT, "3 bytes is too small");
	write_raw(tmp_path, (uint64_t)1 << 40, "{}", 0);
	expect_open_error(TRL_EFORMAT, "header length 1099511627776 is impossible");
	write_raw(tmp_path, 3, "{}", 0);
	expect_open_error(TRL_EFORMAT,
	                  "header length 3 is impossible for a file of 10 bytes");
	write_raw(tmp_path, 0, "", 0);
	expect_open_error(TRL_EFORMAT, "header length 0");
	StFile f;
	TrlErr err;
	cr_assert_eq(st_open(&f, "/nonexistent/x.safetensors", &err), TRL_EIO);
	cr_assert(strstr(err.msg, "No such file or directory"), "%s", err.msg);
}

Test(safetensors, bad_header_json)
{
	expect_header_error("{\"x\": {\"dtype\": \"F32\",}}", 0, TRL_EFORMAT,
	                    "the header is not valid JSON at byte 30: trailing comma");
	expect_header_error("[1, 2]  ", 0, TRL_EFORMAT,
	                    "must be a JSON object, got array");
	expect_header_error("{\"x\": 1}", 0, TRL_EFORMAT,
	                    "tensor 'x': expected an object");
	expect_header_error("{\"__metadata__\": {\"a\": 1}}", 0, TRL_EFORMAT,
	                    "metadata 'a' must be a string, got number");
	expect_header_error("{\"__metadata__\": []}", 0, TRL_EFORMAT,
	                    "'__metadata__' must be an object");
}

Test(safetensors, bad_tensor_entries)
{
	expect_header_error(
	    "{\"x\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2,
	    TRL_EUNSUPPORTED, "tensor 'x': unsupported dtype 'U8'");
	expect_header_error("{\"x\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8,
	                    TRL_EFORMAT, "tensor 'x': 'dtype' is missing");
	expect_header_error(
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, "
	    "8]}}",
	    8, TRL_EFORMAT, "tensor 'x': 'shape' must be a list");
	expect_header_error(
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, "
	    "8]}}",
	    8, TRL_EFORMAT, "'shape' must be a list");
	expect_header_error(
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,2], "
	    "\"data_offsets\": [0, 8]}}",
	    8, TRL_EFORMAT, "at most 8");
	expect_header_error(
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, "
	    "0]}}",
	    8, TRL_EFORMAT, "'data_offsets' must be [begin, end]");
	expect_header_error(
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8,
	    TRL_EFORMAT, "'data_offsets' must be [begin, end]");
	expect_header_error(
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, "
	    "32]}}",
	    16, TRL_EFORMAT,
	    "tensor 'x': data_offsets [0, 32) reach past the end of the data "
	    "(16 bytes)");
	expect_header_error(
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4], "
	    "\"data_offsets\": [0, 16]}}",
	    16, TRL_EFORMAT, "is too large");
	expect_header_error(
	    "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, "
	    "16]}, \"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": "
	    "[8, 24]}}",
	    24, TRL_EFORMAT, "tensors 'a' [0, 16) and 'b' [8, 24) overlap");
	expect_header_error(
	    "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, "
	    "4]}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
	    "[4, 8]}}",
	    8, TRL_EFORMAT, "tensor 'a' appears twice");
}

Test(safetensors, shape_offset_mismatch_message)
{
	const char *h =
	    "{\"x\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, "
	    "12]}}";
	write_raw(tmp_path, strlen(h), h, 16);
	StFile f;
	TrlErr err;
	cr_assert_eq(st_open(&f, tmp_path, &err), TRL_EFORMAT);
	char want[256];
	snprintf(
	    want, sizeof want,
	    "%s: tensor 'x': data_offsets [0, 12) do not match shape [2, 2] of F32 (16 "
	    "bytes)",
	    tmp_path);
	cr_assert_str_eq(err.msg, want);
}

Test(safetensors, gaps_and_empty_tensors_are_accepted)
{
	const char *h =
	    "{\"e\": {\"dtype\": \"I64\", \"shape\": [0], \"data_offsets\": [4, 4]}, "
	    "\"x\": {\"dtype\": \"I32\", \"shape\": [], \"data_offsets\": [8, 12]}}";
	write_raw(tmp_path, strlen(h), h, 12);
	StFile f;
	TrlErr err;
	cr_assert_eq(st_open(&f, tmp_path, &err), 0, "%s", err.msg);
	cr_assert_eq(f.n, 2);
	cr_assert_eq(st_find(&f, "x")->ndim, 0);
	cr_assert_eq(st_find(&f, "x")->nbytes, 4);
	cr_assert_eq(st_find(&f, "e")->nbytes, 0);
	cr_assert_eq((const char *)st_find(&f, "x")->data - (const char *)f.image,
	             (long)(8 + strlen(h) + 8));
	st_close(&f);
}

Test(safetensors, truncated_and_corrupted_files_fail_cleanly)
{
	float x[64];
	for (int i = 0; i < 64; i++)
		x[i] = (float)i;
	int64_t s[2] = {8, 8}, s1[1] = {3};
	StTensor t[2] = {tensor("w", ST_F32, 2, s, x, sizeof x),
	                 tensor("b", ST_F32, 1, s1, x, 12)};
	const char *meta[] = {"format", "pt"};
	TrlErr err;
	cr_assert_eq(st_write(tmp_path, t, 2, meta, 1, &err), 0);
	size_t n;
	unsigned char *good = slurp(tmp_path, &n);
	spit(tmp_path, good, n - 5);
	expect_open_error(TRL_EFORMAT,
	                  "tensor 'b': data_offsets [256, 268) reach past the end");
	/* Random damage to the length and header must give errors, never crashes. */
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)good[i] << (8 * i);
	unsigned char *bad = malloc(n);
	Rng r;
	rng_seed(&r, 1);
	int n_ok = 0, n_err = 0;
	for (int it = 0; it < 3000; it++) {
		memcpy(bad, good, n);
		int flips = 1 + (int)rng_below(&r, 3);
		for (int k = 0; k < flips; k++) {
			size_t at = (size_t)rng_below(&r, 8 + hlen);
			bad[at] = (unsigned char)rng_next(&r);
		}
		spit(tmp_path, bad, n);
		StFile f;
		int rc = st_open(&f, tmp_path, &err);
		if (rc == 0) {
			n_ok++;
			for (int i = 0; i < f.n; i++) {
				const char *d = f.t[i].data;
				cr_assert(d >= (const char *)f.image &&
				          d + f.t[i].nbytes <=
				              (const char *)f.image + f.size);
			}
		} else {
			n_err++;
			cr_assert(strlen(err.msg) > 0);
		}
		st_close(&f);
	}
	cr_assert_gt(n_err, 1000, "most damage is detected (%d ok, %d errors)", n_ok,
	             n_err);
	free(bad);
	free(good);
}
