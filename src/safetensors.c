/* safetensors.c - the safetensors writer (atomic, HF-compatible header) and a
 * validating reader that keeps the whole file in memory. */
#include "safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

static const char *const dtype_names[] = {"F32", "I32", "I64", "F16", "BF16", "F64"};
static const size_t dtype_sizes[] = {4, 4, 8, 2, 2, 8};
#define N_DTYPES ((int)(sizeof dtype_sizes / sizeof dtype_sizes[0]))

/* The Hugging Face reader refuses headers above 100 MB; so do we. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)

const char *st_dtype_name(StDtype d)
{
	return (int)d >= 0 && (int)d < N_DTYPES ? dtype_names[d] : "?";
}

size_t st_dtype_size(StDtype d)
{
	return (int)d >= 0 && (int)d < N_DTYPES ? dtype_sizes[d] : 0;
}

/* Bytes of a tensor of this shape and dtype; 0 with *ok = 0 on overflow. */
static size_t shape_bytes(const int64_t *shape, int ndim, StDtype dt, int *ok)
{
	size_t bytes = st_dtype_size(dt);
	*ok = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 ||
		    __builtin_mul_overflow(bytes, (size_t)shape[i], &bytes)) {
			*ok = 0;
			return 0;
		}
	}
	return bytes;
}

static void format_shape(const int64_t *shape, int ndim, char *buf, size_t cap)
{
	size_t used = 0;
	buf[0] = 0;
	used += (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && used < cap; i++)
		used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "",
		                         (long long)shape[i]);
	if (used < cap)
		snprintf(buf + used, cap - used, "]");
}

static int check_tensors(const char *path, const StTensor *t, int n, TrlErr *err)
{
	for (int i = 0; i < n; i++) {
		const StTensor *x = &t[i];
		if (memchr(x->name, 0, sizeof x->name) == NULL || x->name[0] == 0)
			return trl_errf(err, TRL_EINVAL,
			                "%s: tensor %d has an empty or unterminated name",
			                path, i);
		if (strcmp(x->name, "__metadata__") == 0)
			return trl_errf(err, TRL_EINVAL,
			                "%s: '__metadata__' is not a tensor name", path);
		if ((int)x->dtype < 0 || (int)x->dtype >= N_DTYPES)
			return trl_errf(err, TRL_EINVAL,
			                "%s: tensor '%s': unknown dtype %d", path,
			                x->name, (int)x->dtype);
		if (x->ndim < 0 || x->ndim > 8)
			return trl_errf(err, TRL_EINVAL,
			                "%s: tensor '%s': ndim %d is outside 0..8", path,
			                x->name, x->ndim);
		int ok;
		size_t bytes = shape_bytes(x->shape, x->ndim, x->dtype, &ok);
		if (!ok || bytes != x->nbytes) {
			char sh[200];
			format_shape(x->shape, x->ndim, sh, sizeof sh);
			return trl_errf(
			    err, TRL_EINVAL,
			    "%s: tensor '%s': nbytes %zu do not match shape %s of %s",
			    path, x->name, x->nbytes, sh, dtype_names[x->dtype]);
		}
		if (x->nbytes > 0 && !x->data)
			return trl_errf(err, TRL_EINVAL, "%s: tensor '%s' has no data",
			                path, x->name);
		for (int j = 0; j < i; j++)
			if (strcmp(t[j].name, x->name) == 0)
				return trl_errf(err, TRL_EINVAL,
				                "%s: tensor '%s' appears twice", path,
				                x->name);
	}
	return 0;
}

int st_write(const char *path, const StTensor *t, int n, const char *const *meta_kv,
             int n_meta, TrlErr *err)
{
	int rc = check_tensors(path, t, n, err);
	if (rc < 0)
		return rc;
	/* The header, as the Hugging Face writer lays it out: metadata first, then
	 * each tensor with offsets relative to the start of the data. */
	JsonBuf h = {0};
	json_buf_puts(&h, "{");
	if (n_meta > 0) {
		json_buf_puts(&h, "\"__metadata__\":{");
		for (int i = 0; i < n_meta; i++) {
			const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
			if (i)
				json_buf_puts(&h, ",");
			json_buf_string(&h, k, strlen(k));
			json_buf_puts(&h, ":");
			json_buf_string(&h, v, strlen(v));
		}
		json_buf_puts(&h, "}");
	}
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		if (i || n_meta > 0)
			json_buf_puts(&h, ",");
		json_buf_string(&h, t[i].name, strlen(t[i].name));
		json_buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[",
		                dtype_names[t[i].dtype]);
		for (int d = 0; d < t[i].ndim; d++)
			json_buf_printf(&h, "%s%lld", d ? "," : "",
			                (long long)t[i].shape[d]);
		json_buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off,
		                off + t[i].nbytes);
		off += t[i].nbytes;
	}
	json_buf_puts(&h, "}");
	/* Spaces pad the header so the data starts 8-byte aligned in the file. */
	while ((8 + h.len) % 8 != 0)
		json_buf_puts(&h, " ");
	if (h.oom) {
		json_buf_free(&h);
		return trl_errf(err, TRL_ENOMEM, "%s: out of memory building the header",
		                path);
	}

	size_t plen = strlen(path);
	char *tmp = malloc(plen + 5);
	FILE *f = NULL;
	if (!tmp) {
		rc = trl_errf(err, TRL_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp", 5);
	f = fopen(tmp, "wb");
	if (!f) {
		rc = trl_errf(err, TRL_EIO, "cannot create %s: %s", tmp, strerror(errno));
		goto fail;
	}
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
	int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.len, f) == h.len;
	for (int i = 0; ok && i < n; i++)
		ok = t[i].nbytes == 0 ||
		     fwrite(t[i].data, 1, t[i].nbytes, f) == t[i].nbytes;
	/* The data must be on disk before the rename makes it the file at path. */
	if (!ok || fflush(f) != 0 || fsync(fileno(f)) != 0) {
		rc = trl_errf(err, TRL_EIO, "cannot write %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (fclose(f) != 0) {
		f = NULL;
		rc = trl_errf(err, TRL_EIO, "cannot write %s: %s", tmp, strerror(errno));
		goto fail;
	}
	f = NULL;
	if (rename(tmp, path) != 0) {
		rc = trl_errf(err, TRL_EIO, "cannot rename %s to %s: %s", tmp, path,
		              strerror(errno));
		goto fail;
	}
	free(tmp);
	json_buf_free(&h);
	return 0;
fail:
	if (f)
		fclose(f);
	if (tmp)
		unlink(tmp);
	free(tmp);
	json_buf_free(&h);
	return rc;
}

/* Reads a non-negative integer array of at most max items into out. */
static int int_array(const JsonValue *v, int64_t *out, int max, int *n)
{
	if (!v || v->type != JSON_ARRAY || v->len > (size_t)max)
		return -1;
	for (size_t i = 0; i < v->len; i++) {
		const JsonValue *x = &v->items[i];
		if (x->type != JSON_NUMBER || !x->is_int || x->inum < 0)
			return -1;
		out[i] = x->inum;
	}
	*n = (int)v->len;
	return 0;
}

typedef struct Span {
	uint64_t begin, end;
	int idx;
} Span;

static int span_cmp(const void *a, const void *b)
{
	const Span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->idx - y->idx;
}

static int name_cmp(const void *a, const void *b)
{
	const StTensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

/* Reads one tensor entry of the header into t; span gets its data offsets. */
static int parse_tensor(const char *path, const JsonMember *m, uint64_t data_size,
                        StTensor *t, Span *span, TrlErr *err)
{
	const char *name = m->key;
	if (m->key_len == 0 || m->key_len >= sizeof t->name || strlen(name) != m->key_len)
		return trl_errf(
		    err, TRL_EFORMAT,
		    "%s: tensor name '%.60s' is empty, longer than %zu bytes or "
		    "contains NUL",
		    path, name, sizeof t->name - 1);
	memcpy(t->name, name, m->key_len + 1);
	const JsonValue *v = &m->value;
	if (v->type != JSON_OBJECT)
		return trl_errf(err, TRL_EFORMAT,
		                "%s: tensor '%s': expected an object, got %s", path, name,
		                json_type_name(v->type));
	const char *dt = json_str(json_get(v, "dtype"));
	if (!dt)
		return trl_errf(err, TRL_EFORMAT,
		                "%s: tensor '%s': 'dtype' is missing or not a string",
		                path, name);
	int d = 0;
	while (d < N_DTYPES && strcmp(dt, dtype_names[d]) != 0)
		d++;
	if (d == N_DTYPES)
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "%s: tensor '%s': unsupported dtype '%s' (supported: F32, I32, "
		    "I64, F16, BF16, F64)",
		    path, name, dt);
	t->dtype = (StDtype)d;
	if (int_array(json_get(v, "shape"), t->shape, 8, &t->ndim) < 0)
		return trl_errf(err, TRL_EFORMAT,
		                "%s: tensor '%s': 'shape' must be a list of at most 8 "
		                "non-negative integers",
		                path, name);
	int64_t off[2];
	int noff = 0;
	if (int_array(json_get(v, "data_offsets"), off, 2, &noff) < 0 || noff != 2 ||
	    off[0] > off[1])
		return trl_errf(
		    err, TRL_EFORMAT,
		    "%s: tensor '%s': 'data_offsets' must be [begin, end] with 0 <= "
		    "begin <= end",
		    path, name);
	if ((uint64_t)off[1] > data_size)
		return trl_errf(
		    err, TRL_EFORMAT,
		    "%s: tensor '%s': data_offsets [%lld, %lld) reach past the end "
		    "of the data (%llu bytes); the file may be truncated",
		    path, name, (long long)off[0], (long long)off[1],
		    (unsigned long long)data_size);
	int ok;
	size_t bytes = shape_bytes(t->shape, t->ndim, t->dtype, &ok);
	if (!ok || bytes != (uint64_t)(off[1] - off[0])) {
		char sh[200];
		format_shape(t->shape, t->ndim, sh, sizeof sh);
		if (!ok)
			return trl_errf(err, TRL_EFORMAT,
			                "%s: tensor '%s': shape %s of %s is too large",
			                path, name, sh, dt);
		return trl_errf(
		    err, TRL_EFORMAT,
		    "%s: tensor '%s': data_offsets [%lld, %lld) do not match shape "
		    "%s of %s (%zu bytes)",
		    path, name, (long long)off[0], (long long)off[1], sh, dt, bytes);
	}
	t->nbytes = bytes;
	span->begin = (uint64_t)off[0];
	span->end = (uint64_t)off[1];
	return 0;
}

static int parse_metadata(const char *path, StFile *f, const JsonValue *v, TrlErr *err)
{
	if (v->type != JSON_OBJECT)
		return trl_errf(err, TRL_EFORMAT,
		                "%s: '__metadata__' must be an object, got %s", path,
		                json_type_name(v->type));
	f->meta_kv = calloc(2 * v->len + 1, sizeof *f->meta_kv);
	if (!f->meta_kv)
		return trl_errf(err, TRL_ENOMEM, "%s: out of memory", path);
	for (size_t i = 0; i < v->len; i++) {
		const JsonMember *m = &v->members[i];
		if (m->value.type != JSON_STRING)
			return trl_errf(err, TRL_EFORMAT,
			                "%s: metadata '%s' must be a string, got %s",
			                path, m->key, json_type_name(m->value.type));
		f->meta_kv[2 * i] = strdup(m->key);
		f->meta_kv[2 * i + 1] = strdup(m->value.str);
		f->n_meta = (int)i + 1;
		if (!f->meta_kv[2 * i] || !f->meta_kv[2 * i + 1])
			return trl_errf(err, TRL_ENOMEM, "%s: out of memory", path);
	}
	return 0;
}

/* Maps a regular, non-empty file read-only; leaves f->mapped 0 otherwise
 * (the caller then reads it). */
static int map_file(StFile *f, const char *path)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p != MAP_FAILED) {
			f->image = p;
			f->size = (size_t)st.st_size;
			f->mapped = 1;
		}
	}
	close(fd);
	return 0;
}

void st_release(const StFile *f, const StTensor *t)
{
	if (!f->mapped || t->nbytes == 0)
		return;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t b = (uintptr_t)t->data, e = b + t->nbytes;
	b = (b + page - 1) / page * page; /* whole pages inside the tensor */
	e = e / page * page;
	if (e > b)
		madvise((void *)b, e - b, MADV_DONTNEED);
}

int st_open(StFile *f, const char *path, TrlErr *err)
{
	memset(f, 0, sizeof *f);
	JsonValue *root = NULL;
	Span *spans = NULL;
	const StTensor **byname = NULL;
	char *image = NULL;
	int rc = map_file(f, path);
	if (!f->mapped) {
		rc = trl_read_file(path, &image, &f->size, err);
		f->image = image;
	}
	if (rc < 0)
		return rc;
	const unsigned char *img = f->image;
	if (f->size < 8) {
		rc = trl_errf(err, TRL_EFORMAT,
		              "%s: %zu bytes is too small for a safetensors file", path,
		              f->size);
		goto fail;
	}
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)img[i] << (8 * i);
	if (hlen > f->size - 8 || hlen > ST_MAX_HEADER || hlen < 2) {
		rc = trl_errf(
		    err, TRL_EFORMAT,
		    "%s: header length %llu is impossible for a file of %zu bytes "
		    "(not a safetensors file, or truncated)",
		    path, (unsigned long long)hlen, f->size);
		goto fail;
	}
	JsonError je;
	rc = json_parse((const char *)img + 8, (size_t)hlen, &root, &je);
	if (rc < 0) {
		rc = trl_errf(err, rc, "%s: the header is not valid JSON at byte %zu: %s",
		              path, je.offset + 8, je.msg);
		goto fail;
	}
	if (root->type != JSON_OBJECT) {
		rc = trl_errf(err, TRL_EFORMAT,
		              "%s: the header must be a JSON object, got %s", path,
		              json_type_name(root->type));
		goto fail;
	}
	uint64_t data_size = f->size - 8 - hlen;
	size_t cap = root->len ? root->len : 1;
	f->t = calloc(cap, sizeof *f->t);
	spans = calloc(cap, sizeof *spans);
	byname = calloc(cap, sizeof *byname);
	if (!f->t || !spans || !byname) {
		rc = trl_errf(err, TRL_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	for (size_t i = 0; i < root->len; i++) {
		const JsonMember *m = &root->members[i];
		if (strcmp(m->key, "__metadata__") == 0 && m->key_len == 12) {
			if (f->meta_kv) {
				rc = trl_errf(err, TRL_EFORMAT,
				              "%s: '__metadata__' appears twice", path);
				goto fail;
			}
			if ((rc = parse_metadata(path, f, &m->value, err)) < 0)
				goto fail;
			continue;
		}
		StTensor *t = &f->t[f->n];
		if ((rc = parse_tensor(path, m, data_size, t, &spans[f->n], err)) < 0)
			goto fail;
		t->data = img + 8 + hlen + spans[f->n].begin;
		spans[f->n].idx = f->n;
		byname[f->n] = t;
		f->n++;
	}
	qsort(byname, (size_t)f->n, sizeof *byname, name_cmp);
	for (int i = 1; i < f->n; i++)
		if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) {
			rc = trl_errf(err, TRL_EFORMAT, "%s: tensor '%s' appears twice",
			              path, byname[i]->name);
			goto fail;
		}
	qsort(spans, (size_t)f->n, sizeof *spans, span_cmp);
	uint64_t prev_end = 0;
	int prev = -1;
	for (int i = 0; i < f->n; i++) {
		if (spans[i].begin == spans[i].end)
			continue;
		if (prev >= 0 && spans[i].begin < prev_end) {
			rc = trl_errf(
			    err, TRL_EFORMAT,
			    "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) "
			    "overlap",
			    path, f->t[spans[prev].idx].name,
			    (unsigned long long)spans[prev].begin,
			    (unsigned long long)spans[prev].end, f->t[spans[i].idx].name,
			    (unsigned long long)spans[i].begin,
			    (unsigned long long)spans[i].end);
			goto fail;
		}
		prev = i;
		prev_end = spans[i].end;
	}
	json_free(root);
	free(spans);
	free(byname);
	return 0;
fail:
	json_free(root);
	free(spans);
	free(byname);
	st_close(f);
	return rc;
}

void st_close(StFile *f)
{
	if (f->mapped)
		munmap(f->image, f->size);
	else
		trl_free(f->image);
	free(f->t);
	if (f->meta_kv)
		for (int i = 0; i < 2 * f->n_meta; i++)
			free(f->meta_kv[i]);
	free(f->meta_kv);
	memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->t[i].name, name) == 0)
			return &f->t[i];
	return NULL;
}

const char *st_meta(const StFile *f, const char *key)
{
	for (int i = 0; i < f->n_meta; i++)
		if (strcmp(f->meta_kv[2 * i], key) == 0)
			return f->meta_kv[2 * i + 1];
	return NULL;
}

/* ---- float conversions ----------------------------------------------------- */

float st_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

uint16_t st_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	/* A NaN keeps its sign and top payload bits and is forced quiet, so the
	 * rounding below cannot carry it into an infinity. */
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x0040u);
	/* Round to nearest, ties to even: add 0x7fff plus the lowest kept bit.
	 * A carry out of the mantissa correctly rounds up to the next binade or
	 * to infinity. */
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

float st_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
	if (exp == 0x1f) {
		u = sign | 0x7f800000u | (man << 13);
	} else if (exp != 0) {
		u = sign | ((exp + 112u) << 23) | (man << 13);
	} else if (man == 0) {
		u = sign;
	} else {
		/* Subnormal half: value man * 2^-24, exact in float. */
		float f = (float)man * 5.9604644775390625e-8f;
		memcpy(&u, &f, sizeof u);
		u |= sign;
	}
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

int st_tensor_to_f32(const StTensor *t, float *out, size_t n, TrlErr *err)
{
	size_t es = st_dtype_size(t->dtype);
	if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16 &&
	    t->dtype != ST_F64)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "tensor '%s' has dtype %s; only F32, BF16, F16 and F64 "
		                "can be read as float32",
		                t->name, st_dtype_name(t->dtype));
	if (es == 0 || t->nbytes != n * es)
		return trl_errf(err, TRL_EFORMAT,
		                "tensor '%s' holds %zu bytes, expected %zu values of %s",
		                t->name, t->nbytes, n, st_dtype_name(t->dtype));
	const unsigned char *src = t->data;
	/* The source may be misaligned for its element type: copy each element. */
	switch (t->dtype) {
	case ST_F32:
		memcpy(out, src, n * sizeof(float));
		break;
	case ST_BF16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, src + 2 * i, 2);
			out[i] = st_bf16_to_f32(h);
		}
		break;
	case ST_F16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, src + 2 * i, 2);
			out[i] = st_f16_to_f32(h);
		}
		break;
	default:
		for (size_t i = 0; i < n; i++) {
			double d;
			memcpy(&d, src + 8 * i, 8);
			out[i] = (float)d;
		}
		break;
	}
	return TRL_OK;
}
