/* safetensors.h - read and write the safetensors format: an 8-byte little-endian
 * header length, a JSON header {"name": {"dtype", "shape", "data_offsets"},
 * "__metadata__": {str: str}}, then the raw little-endian tensor bytes.
 */
#ifndef TRL_SAFETENSORS_H
#define TRL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "trl.h"

typedef enum { ST_F32 = 0, ST_I32, ST_I64, ST_F16, ST_BF16, ST_F64 } StDtype;

/* "F32", "I32", ... as in the header, and the bytes of one element. */
const char *st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);

typedef struct StTensor {
	char name[128];
	StDtype dtype;
	int ndim;
	int64_t shape[8];
	/* Writer: the caller's bytes. Reader: points into the file image, which is
	 * 64-byte aligned with the data starting at an 8-byte aligned offset; a
	 * tensor is aligned to its element size only if the data offset is a
	 * multiple of it (always so in files of one dtype), else memcpy it. */
	const void *data;
	size_t nbytes;
} StTensor;

/* Writes tensors (in the given order) and optional metadata pairs
 * (meta_kv[2i] = key, meta_kv[2i+1] = value, n_meta pairs) to path. */
int st_write(const char *path, const StTensor *t, int n, const char *const *meta_kv,
             int n_meta, TrlErr *err);

typedef struct StFile {
	void *image; /* whole file: mapped read-only (mapped), else read in */
	size_t size;
	int mapped;
	StTensor *t;
	int n;
	char **meta_kv; /* 2 * n_meta strings */
	int n_meta;
} StFile;

/* Reads and validates a whole file (offsets in range, shapes agree with
 * dtype sizes). st_close is safe on a zeroed struct. */
int st_open(StFile *f, const char *path, TrlErr *err);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
/* Drops the pages of t's data from memory once it was read (a mapped file
 * keeps only what is still to be read resident, so a model loads with one
 * copy of its weights); t stays readable (read again from the file). */
void st_release(const StFile *f, const StTensor *t);
const char *st_meta(const StFile *f, const char *key);

/* Half-precision conversions (little-endian bit patterns as uint16_t).
 * st_f32_to_bf16 rounds to nearest, ties to even; infinities stay infinite,
 * NaN stays NaN (made quiet), values past the largest bf16 become infinity.
 * bf16 -> f32 and f16 -> f32 are exact. */
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);
float st_f16_to_f32(uint16_t h);

/* Converts the n elements of a floating-point tensor (F32, BF16, F16, F64)
 * to float32 in out (n floats, caller's). Handles misaligned data. Returns 0,
 * or TRL_EUNSUPPORTED / TRL_EFORMAT naming the tensor. */
int st_tensor_to_f32(const StTensor *t, float *out, size_t n, TrlErr *err);

#endif
