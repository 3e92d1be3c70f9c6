/* ckpt_h5.c - checkpoint files: collective parallel-HDF5 save and load of the
 * sharded model and optimizer, the `latest` pointer and rotation. */
#define _GNU_SOURCE
#include "ckpt_h5.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "comm.h"
#include "json.h"
#include "model_io.h"

#define CKPT_FORMAT_NAME "trl-hpc checkpoint"

/* The tensor groups, in the order of ZERO_PARAMS, ZERO_EXP_AVG, ZERO_EXP_AVG_SQ. */
static const char *const GROUP[3] = {"model", "optimizer/exp_avg",
                                     "optimizer/exp_avg_sq"};

/* ---- HDF5 errors ---------------------------------------------------------------- */

typedef struct Reason {
	char text[256];
} Reason;

/* The first HDF5 failure since h5_quiet, as the innermost description on
 * its error stack: the actual cause, such as "truncated file" or "incorrect
 * metadata checksum". Later failures are usually its consequences. */
static Reason first_failure;

static herr_t take_desc(unsigned n, const H5E_error2_t *e, void *data)
{
	(void)n;
	Reason *r = data;
	if (e->desc && e->desc[0])
		snprintf(r->text, sizeof r->text, "%s", e->desc);
	return 0;
}

/* HDF5 calls this when an API call fails, instead of printing its stack. */
static herr_t record_failure(hid_t stack, void *data)
{
	(void)data;
	if (!first_failure.text[0])
		H5Ewalk2(stack, H5E_WALK_DOWNWARD, take_desc, &first_failure);
	return 0;
}

static void h5_quiet(void)
{
	first_failure.text[0] = '\0';
	H5Eset_auto2(H5E_DEFAULT, record_failure, NULL);
}

static const char *h5_reason(Reason *r)
{
	snprintf(r->text, sizeof r->text, "%s",
	         first_failure.text[0] ? first_failure.text : "unknown HDF5 error");
	return r->text;
}

/* A parallel (MPI-IO) file access list for comm, or the default POSIX driver
 * for MPI_COMM_NULL. The 1.8 format gives every object header and the
 * superblock a checksum, so damaged metadata is detected rather than read. */
static hid_t file_access(MPI_Comm comm)
{
	hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (comm != MPI_COMM_NULL) {
		H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
		H5Pset_all_coll_metadata_ops(fapl, 1);
		H5Pset_coll_metadata_write(fapl, 1);
	}
	H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
	return fapl;
}

/* ---- attributes ----------------------------------------------------------------- */

static int attr_write(hid_t obj, const char *name, hid_t type, const void *v)
{
	hid_t sp = H5Screate(H5S_SCALAR);
	hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
	herr_t st = a >= 0 ? H5Awrite(a, type, v) : -1;
	if (a >= 0)
		H5Aclose(a);
	H5Sclose(sp);
	return st < 0 ? -1 : 0;
}

static int put_long(hid_t obj, const char *name, long v)
{
	long long x = v;
	return attr_write(obj, name, H5T_NATIVE_LLONG, &x);
}

static int put_double(hid_t obj, const char *name, double v)
{
	return attr_write(obj, name, H5T_NATIVE_DOUBLE, &v);
}

/* A fixed-length, NUL-terminated UTF-8 string type of n bytes. */
static hid_t str_type(size_t n)
{
	hid_t t = H5Tcopy(H5T_C_S1);
	H5Tset_size(t, n > 0 ? n : 1);
	H5Tset_strpad(t, H5T_STR_NULLTERM);
	H5Tset_cset(t, H5T_CSET_UTF8);
	return t;
}

static int put_str(hid_t obj, const char *name, const char *s)
{
	hid_t t = str_type(strlen(s) + 1);
	int rc = attr_write(obj, name, t, s);
	H5Tclose(t);
	return rc;
}

/* Reads a numeric attribute converted to type; -1 when it is missing or not
 * a number. */
static int attr_read(hid_t obj, const char *name, hid_t type, void *v)
{
	if (H5Aexists(obj, name) <= 0)
		return -1;
	hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
	hid_t ft = a >= 0 ? H5Aget_type(a) : -1;
	int ok =
	    ft >= 0 && (H5Tget_class(ft) == H5T_INTEGER || H5Tget_class(ft) == H5T_FLOAT);
	herr_t st = ok ? H5Aread(a, type, v) : -1;
	if (ft >= 0)
		H5Tclose(ft);
	if (a >= 0)
		H5Aclose(a);
	return st < 0 ? -1 : 0;
}

/* A string attribute or scalar string dataset, as a malloc'd C string. */
static char *read_string(hid_t obj, const char *name, int dataset)
{
	if (dataset ? H5Lexists(obj, name, H5P_DEFAULT) <= 0 : H5Aexists(obj, name) <= 0)
		return NULL;
	hid_t o =
	    dataset ? H5Dopen2(obj, name, H5P_DEFAULT) : H5Aopen(obj, name, H5P_DEFAULT);
	hid_t ft = o < 0 ? -1 : dataset ? H5Dget_type(o) : H5Aget_type(o);
	char *s = NULL;
	if (ft >= 0 && H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft)) {
		size_t n = H5Tget_size(ft);
		hid_t mt = str_type(n);
		s = calloc(n + 1, 1);
		herr_t st = !s        ? -1
		            : dataset ? H5Dread(o, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s)
		                      : H5Aread(o, mt, s);
		if (st < 0) {
			free(s);
			s = NULL;
		}
		H5Tclose(mt);
	}
	if (ft >= 0)
		H5Tclose(ft);
	if (o >= 0)
		dataset ? H5Dclose(o) : H5Aclose(o);
	return s;
}

/* ---- the scalar state ----------------------------------------------------------- */

static hid_t new_group(hid_t f, const char *name)
{
	hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
	/* Tensors are listed in creation order: the parameter table's. */
	H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
	hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
	H5Pclose(gcpl);
	return g;
}

/* The scalar state: one table for writing and reading, in the order the
 * groups are read (save_only_model comes before the optimizer's step, which a
 * model-only checkpoint does not have). */
enum { F_LONG, F_INT, F_DOUBLE };

typedef struct Field {
	const char *group, *name;
	int type;
	size_t off;
	int optional; /* added after format version 1 first shipped: a file
	               * without it reads as 0 */
} Field;

#define FIELD(g, n, t, field)                                                            \
	{                                                                                \
		g, n, t, offsetof(CkptState, field), 0                                   \
	}
#define OPTIONAL_FIELD(g, n, t, field)                                                   \
	{                                                                                \
		g, n, t, offsetof(CkptState, field), 1                                   \
	}

static const Field FIELDS[] = {
    FIELD("trainer_state", "global_step", F_LONG, global_step),
    FIELD("trainer_state", "total_steps", F_LONG, total_steps),
    FIELD("trainer_state", "epoch", F_DOUBLE, epoch),
    FIELD("trainer_state", "num_tokens", F_LONG, num_tokens),
    FIELD("trainer_state", "world_size", F_INT, world_size),
    FIELD("trainer_state", "zero_stage", F_INT, zero_stage),
    FIELD("trainer_state", "save_only_model", F_INT, save_only_model),
    OPTIONAL_FIELD("trainer_state", "bco_running_mean", F_DOUBLE, bco_mean),
    OPTIONAL_FIELD("trainer_state", "bco_running_var", F_DOUBLE, bco_var),
    OPTIONAL_FIELD("trainer_state", "bco_running_count", F_DOUBLE, bco_count),
    FIELD("sampler", "seed", F_LONG, seed),
    FIELD("sampler", "samples_seen", F_LONG, samples_seen),
    FIELD("sampler", "rows_per_step", F_LONG, rows_per_step),
    FIELD("sampler", "num_rows", F_LONG, num_rows),
    FIELD("scheduler", "lr_scheduler_type", F_INT, lr_scheduler_type),
    FIELD("scheduler", "learning_rate", F_DOUBLE, learning_rate),
    FIELD("scheduler", "warmup_steps", F_LONG, warmup_steps),
    FIELD("scheduler", "total_steps", F_LONG, total_steps),
    FIELD("scheduler", "last_lr", F_DOUBLE, last_lr),
    FIELD("model", "bos_token_id", F_INT, bos_token_id),
    FIELD("model", "eos_token_id", F_INT, eos_token_id),
    FIELD("optimizer", "step", F_LONG, adam_step),
};

/* Writes (or reads) field fd of st as an attribute of its group. */
static int move_field(hid_t f, const Field *fd, CkptState *st, int write)
{
	hid_t g = H5Gopen2(f, fd->group, H5P_DEFAULT);
	char *p = (char *)st + fd->off;
	long long x = fd->type == F_LONG ? *(long *)p : fd->type == F_INT ? *(int *)p : 0;
	int rc = g < 0 ? -1
	         : fd->type == F_DOUBLE
	             ? (write ? put_double(g, fd->name, *(double *)p)
	                      : attr_read(g, fd->name, H5T_NATIVE_DOUBLE, p))
	         : write ? put_long(g, fd->name, (long)x)
	                 : attr_read(g, fd->name, H5T_NATIVE_LLONG, &x);
	if (!rc && !write && fd->type == F_LONG)
		*(long *)p = (long)x;
	if (!rc && !write && fd->type == F_INT)
		*(int *)p = (int)x;
	if (g >= 0)
		H5Gclose(g);
	return rc;
}

/* Writes everything but the tensors and the rng rows; the same calls on every
 * rank (attributes are collective metadata). */
static int write_state(hid_t f, const Model *m, const CkptState *st, const AdamW *opt)
{
	int bad = 0;
	bad |= put_str(f, "format", CKPT_FORMAT_NAME);
	bad |= put_long(f, "format_version", CKPT_FORMAT_VERSION);
	bad |= put_str(f, "trl_hpc_version", TRL_VERSION_STRING);
	const char *const plain[] = {"trainer_state", "sampler", "scheduler",
	                             "optimizer"};
	int nplain = st->save_only_model ? 3 : 4; /* no optimizer group */
	for (int i = 0; i < nplain; i++) {
		hid_t g = H5Gcreate2(f, plain[i], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
		bad |= g < 0;
		if (g >= 0)
			H5Gclose(g);
	}
	for (int k = 0; k < (st->save_only_model ? 1 : 3); k++) {
		hid_t g = new_group(f, GROUP[k]);
		bad |= g < 0;
		if (g >= 0)
			H5Gclose(g);
	}
	for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
		if (!st->save_only_model || strcmp(FIELDS[i].group, "optimizer") != 0)
			bad |=
			    move_field(f, &FIELDS[i], (CkptState *)st, 1); /* only read */

	JsonBuf jb = {0};
	model_config_hf_json(&m->cfg, "float32", &jb);
	hid_t g = H5Gopen2(f, "model", H5P_DEFAULT);
	bad |= g < 0 || jb.oom || put_str(g, "config_json", jb.p ? jb.p : "") ||
	       put_str(g, "model_name_or_path", st->model_name_or_path) ||
	       (st->lora[0] && put_str(g, "lora", st->lora));
	json_buf_free(&jb);
	if (g >= 0)
		H5Gclose(g);
	if (!st->save_only_model) {
		g = H5Gopen2(f, "optimizer", H5P_DEFAULT);
		bad |= g < 0 || put_double(g, "beta1", opt->beta1) ||
		       put_double(g, "beta2", opt->beta2) ||
		       put_double(g, "epsilon", opt->eps) ||
		       put_double(g, "weight_decay", opt->weight_decay);
		if (g >= 0)
			H5Gclose(g);
	}
	return bad ? -1 : 0;
}

/* Reads the header and the scalar state; errors name the missing piece. */
static int read_state(hid_t f, const char *path, CkptState *st, TrlErr *err)
{
	memset(st, 0, sizeof *st);
	char *fmt = read_string(f, "format", 0);
	long long ver = 0;
	int ok = fmt && strcmp(fmt, CKPT_FORMAT_NAME) == 0;
	free(fmt);
	if (!ok)
		return trl_errf(err, TRL_EFORMAT,
		                "%s is an HDF5 file but not a trl-hpc checkpoint (no "
		                "format attribute '%s')",
		                path, CKPT_FORMAT_NAME);
	if (attr_read(f, "format_version", H5T_NATIVE_LLONG, &ver) != 0 ||
	    ver != CKPT_FORMAT_VERSION)
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "%s has checkpoint format version %lld; this trl-hpc (%s) "
		    "reads version %d: use the trl-hpc release that wrote it",
		    path, ver, TRL_VERSION_STRING, CKPT_FORMAT_VERSION);
	for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
		const Field *fd = &FIELDS[i];
		if (st->save_only_model && strcmp(fd->group, "optimizer") == 0)
			continue;
		if (fd->optional) {
			hid_t g = H5Gopen2(f, fd->group, H5P_DEFAULT);
			int there = g >= 0 && H5Aexists(g, fd->name) > 0;
			if (g >= 0)
				H5Gclose(g);
			if (!there)
				continue;
		}
		if (move_field(f, fd, st, 0) != 0)
			return trl_errf(err, TRL_EFORMAT,
			                "%s: attribute %s/%s is missing or unreadable (a "
			                "damaged or incomplete checkpoint)",
			                path, fd->group, fd->name);
	}
	hid_t g = H5Gopen2(f, "model", H5P_DEFAULT);
	char *src = g >= 0 ? read_string(g, "model_name_or_path", 0) : NULL;
	snprintf(st->model_name_or_path, sizeof st->model_name_or_path, "%s",
	         src ? src : "");
	free(src);
	src = g >= 0 && H5Aexists(g, "lora") > 0 ? read_string(g, "lora", 0) : NULL;
	snprintf(st->lora, sizeof st->lora, "%s", src ? src : "");
	free(src);
	if (g >= 0)
		H5Gclose(g);
	if (st->world_size < 1 || st->global_step < 0)
		return trl_errf(err, TRL_EFORMAT,
		                "%s: trainer_state has world_size %d and global_step %ld "
		                "(a damaged checkpoint)",
		                path, st->world_size, st->global_step);
	return TRL_OK;
}

/* The model stored in the checkpoint (its config.json text), checked. */
static int read_model_config(hid_t f, const char *path, ModelConfig *mc, TrlErr *err)
{
	hid_t g = H5Gopen2(f, "model", H5P_DEFAULT);
	char *json = g >= 0 ? read_string(g, "config_json", 0) : NULL;
	if (g >= 0)
		H5Gclose(g);
	if (!json)
		return trl_errf(
		    err, TRL_EFORMAT,
		    "%s: model/config_json is missing (a damaged or incomplete "
		    "checkpoint)",
		    path);
	char origin[TRL_PATH_MAX + 32];
	snprintf(origin, sizeof origin, "%s:model/config_json", path);
	int rc = model_config_parse_json(mc, json, strlen(json), origin, err);
	free(json);
	if (!rc)
		rc = model_config_check(mc, err);
	return rc;
}

/* The first way two models differ, for "this checkpoint holds another model". */
static int same_model(const ModelConfig *a, const ModelConfig *b, const char *path,
                      TrlErr *err)
{
	const struct {
		const char *name;
		long x, y;
	} ints[] = {
	    {"architecture", a->arch, b->arch},
	    {"model_type", a->model_type, b->model_type},
	    {"vocab_size", a->vocab_size, b->vocab_size},
	    {"hidden_size", a->hidden_size, b->hidden_size},
	    {"num_hidden_layers", a->num_hidden_layers, b->num_hidden_layers},
	    {"num_attention_heads", a->num_attention_heads, b->num_attention_heads},
	    {"num_key_value_heads", a->num_key_value_heads, b->num_key_value_heads},
	    {"intermediate_size", a->intermediate_size, b->intermediate_size},
	    {"head_dim", a->head_dim, b->head_dim},
	    {"max_position_embeddings", a->max_position_embeddings,
	     b->max_position_embeddings},
	    {"tie_word_embeddings", a->tie_word_embeddings, b->tie_word_embeddings},
	    {"attention_bias", a->attention_bias, b->attention_bias},
	    {"qk_norm", a->qk_norm, b->qk_norm},
	    {"sliding_window", a->sliding_window, b->sliding_window},
	};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
		if (ints[i].x != ints[i].y)
			return trl_errf(err, TRL_EINVAL,
			                "%s holds another model: %s is %ld there and %ld "
			                "in this run (model: keys or model_name_or_path)",
			                path, ints[i].name, ints[i].x, ints[i].y);
	if (a->rope_theta != b->rope_theta || a->norm_eps != b->norm_eps)
		return trl_errf(err, TRL_EINVAL,
		                "%s holds another model: rope_theta %g and norm_eps %g "
		                "there, %g and %g in this run",
		                path, (double)a->rope_theta, (double)a->norm_eps,
		                (double)b->rope_theta, (double)b->norm_eps);
	return TRL_OK;
}

/* ---- tensors -------------------------------------------------------------------- */

/* Selects elements [lo, hi) of tensor t, in row-major order, in its file
 * space: up to three blocks (the end of a first row, whole rows, the start
 * of a last row). Nothing when lo == hi. */
static int select_range(hid_t space, const ParamInfo *t, size_t lo, size_t hi)
{
	if (lo >= hi)
		return H5Sselect_none(space) < 0 ? -1 : 0;
	if (t->ndim == 1) {
		hsize_t start = lo, count = hi - lo;
		return H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, NULL, &count,
		                           NULL) < 0
		           ? -1
		           : 0;
	}
	hsize_t C = t->shape[1], r0 = lo / C, c0 = lo % C, r1 = hi / C, c1 = hi % C;
	hsize_t blocks[3][4]; /* start row, start col, rows, cols */
	int nb = 0;
	if (r0 == r1) {
		hsize_t b[4] = {r0, c0, 1, c1 - c0};
		memcpy(blocks[nb++], b, sizeof b);
	} else {
		if (c0) {
			hsize_t b[4] = {r0, c0, 1, C - c0};
			memcpy(blocks[nb++], b, sizeof b);
			r0++;
		}
		if (r1 > r0) {
			hsize_t b[4] = {r0, 0, r1 - r0, C};
			memcpy(blocks[nb++], b, sizeof b);
		}
		if (c1) {
			hsize_t b[4] = {r1, 0, 1, c1};
			memcpy(blocks[nb++], b, sizeof b);
		}
	}
	for (int i = 0; i < nb; i++)
		if (H5Sselect_hyperslab(space, i ? H5S_SELECT_OR : H5S_SELECT_SET,
		                        blocks[i], NULL, blocks[i] + 2, NULL) < 0)
			return -1;
	return 0;
}

/* Writes (or reads) elements [lo, hi) of tensor t between dset and buf, as
 * one collective transfer; a rank with nothing to move still takes part. */
static int move_range(hid_t dset, const ParamInfo *t, size_t lo, size_t hi, float *buf,
                      int write, hid_t dxpl)
{
	hid_t fs = H5Dget_space(dset);
	hsize_t n = hi > lo ? hi - lo : 1;
	hid_t ms = H5Screate_simple(1, &n, NULL);
	int bad = fs < 0 || ms < 0 || select_range(fs, t, lo, hi) != 0;
	if (!bad && hi <= lo)
		bad = H5Sselect_none(ms) < 0;
	float dummy = 0.0f;
	float *p = hi > lo ? buf : &dummy;
	if (!bad)
		bad = (write ? H5Dwrite(dset, H5T_NATIVE_FLOAT, ms, fs, dxpl, p)
		             : H5Dread(dset, H5T_NATIVE_FLOAT, ms, fs, dxpl, p)) < 0;
	if (ms >= 0)
		H5Sclose(ms);
	if (fs >= 0)
		H5Sclose(fs);
	return bad ? -1 : 0;
}

/* Adds the checksum terms of words [first, first + n) of a tensor. */
static void checksum_add(const float *x, size_t n, size_t first, uint64_t sum[2])
{
	const uint32_t *w = (const uint32_t *)x;
	uint64_t a = 0, b = 0;
	const long len = (long)n;
#pragma omp parallel for reduction(+ : a, b) schedule(static) if (len > 65536)
	for (long i = 0; i < len; i++) {
		a += w[i];
		b += (uint64_t)(first + (size_t)i + 1) * w[i];
	}
	sum[0] += a;
	sum[1] += b;
}

/* The part [lo, hi) of tensor t (element indices) inside slab range [b, e). */
static int clip_range(const ParamInfo *t, size_t b, size_t e, size_t *lo, size_t *hi)
{
	size_t tb = t->offset, te = t->offset + t->numel;
	size_t x = b > tb ? b : tb, y = e < te ? e : te;
	if (x >= y) {
		*lo = *hi = 0;
		return 0;
	}
	*lo = x - tb;
	*hi = y - tb;
	return 1;
}

/* The unit of every tensor: units are contiguous runs of the table. */
static int *tensor_units(const Model *m)
{
	int *unit = malloc((size_t)m->table.n * sizeof *unit);
	for (int i = 0, u = 0; unit && i < m->table.n; i++) {
		while (m->table.p[i].offset >= m->unit_end[u])
			u++;
		unit[i] = u;
	}
	return unit;
}

/* Checksums of what this rank owns of each tensor in groups [0, ng), summed
 * over ranks: sums[(k * n + i) * 2 + {0, 1}]. Collective. */
static void owned_checksums(Zero *z, const int *unit, int ng, uint64_t *sums)
{
	const ParamTable *tb = &z->m->table;
	memset(sums, 0, (size_t)ng * tb->n * 2 * sizeof *sums);
	for (int k = 0; k < ng; k++)
		for (int i = 0; i < tb->n; i++) {
			size_t b, e, lo, hi;
			const float *p = zero_region(z, unit[i], k, 1, &b, &e);
			if (clip_range(&tb->p[i], b, e, &lo, &hi))
				checksum_add(p + (tb->p[i].offset + lo - b), hi - lo, lo,
				             sums + ((size_t)k * tb->n + i) * 2);
		}
	MPI_Allreduce(MPI_IN_PLACE, sums, ng * tb->n * 2, MPI_UINT64_T, MPI_SUM, z->comm);
}

/* ---- save ----------------------------------------------------------------------- */

static void dir_of(const char *path, char *dir, size_t cap)
{
	snprintf(dir, cap, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	else
		snprintf(dir, cap, ".");
}

/* Writes every tensor of groups [0, ng) with its checksum. */
static int write_tensors(hid_t f, Zero *z, const int *unit, int ng, const uint64_t *sums,
                         hid_t dxpl, double *bytes)
{
	const ParamTable *tb = &z->m->table;
	hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
	/* Every byte is written below: no fill pass over the file first. */
	H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
	H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
	hsize_t two = 2;
	hid_t s2 = H5Screate_simple(1, &two, NULL);
	int bad = 0;
	for (int k = 0; k < ng; k++) {
		hid_t g = H5Gopen2(f, GROUP[k], H5P_DEFAULT);
		bad |= g < 0;
		for (int i = 0; i < tb->n && g >= 0; i++) {
			const ParamInfo *t = &tb->p[i];
			hsize_t dims[2] = {t->shape[0], t->ndim > 1 ? t->shape[1] : 1};
			hid_t sp = H5Screate_simple(t->ndim, dims, NULL);
			hid_t d = H5Dcreate2(g, t->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT,
			                     dcpl, H5P_DEFAULT);
			hid_t a = d >= 0 ? H5Acreate2(d, "checksum", H5T_STD_U64LE, s2,
			                              H5P_DEFAULT, H5P_DEFAULT)
			                 : -1;
			bad |= a < 0 || H5Awrite(a, H5T_NATIVE_UINT64,
			                         sums + ((size_t)k * tb->n + i) * 2) < 0;
			size_t b, e, lo, hi;
			float *p = zero_region(z, unit[i], k, 1, &b, &e);
			clip_range(t, b, e, &lo, &hi);
			if (d >= 0)
				bad |= move_range(d, t, lo, hi, p + (t->offset + lo - b),
				                  1, dxpl);
			*bytes += 4.0 * (double)(hi - lo);
			if (a >= 0)
				H5Aclose(a);
			if (d >= 0)
				H5Dclose(d);
			H5Sclose(sp);
		}
		if (g >= 0)
			H5Gclose(g);
	}
	H5Sclose(s2);
	H5Pclose(dcpl);
	return bad ? -1 : 0;
}

/* Each rank writes its own row of /rng. */
static int write_rng(hid_t f, const CkptState *st, int rank, hid_t dxpl)
{
	hsize_t dims[2] = {(hsize_t)st->world_size, 4}, start[2] = {(hsize_t)rank, 0},
	        count[2] = {1, 4}, four = 4;
	hid_t sp = H5Screate_simple(2, dims, NULL);
	hid_t d = H5Dcreate2(f, "rng", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT,
	                     H5P_DEFAULT);
	hid_t ms = H5Screate_simple(1, &four, NULL);
	int bad = d < 0 ||
	          H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
	          H5Dwrite(d, H5T_NATIVE_UINT64, ms, sp, dxpl, st->rng) < 0;
	H5Sclose(ms);
	if (d >= 0)
		H5Dclose(d);
	H5Sclose(sp);
	return bad ? -1 : 0;
}

/* /config: rank 0 writes the YAML text, the others take part with nothing. */
static int write_config(hid_t f, const char *text, int rank, hid_t dxpl)
{
	hid_t t = str_type(strlen(text) + 1);
	hid_t sp = H5Screate(H5S_SCALAR);
	hid_t d = H5Dcreate2(f, "config", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
	hid_t fs = d >= 0 ? H5Dget_space(d) : -1;
	hid_t ms = H5Screate(H5S_SCALAR);
	if (rank != 0) {
		H5Sselect_none(fs);
		H5Sselect_none(ms);
	}
	int bad = d < 0 || H5Dwrite(d, t, ms, fs, dxpl, text) < 0;
	H5Sclose(ms);
	if (fs >= 0)
		H5Sclose(fs);
	if (d >= 0)
		H5Dclose(d);
	H5Sclose(sp);
	H5Tclose(t);
	return bad ? -1 : 0;
}

int ckpt_save(const char *path, Zero *z, const Config *cfg, const CkptState *st,
              CkptIo *io, TrlErr *err)
{
	Comm c = {z->comm, z->rank, z->N, 0, 1};
	double t0 = MPI_Wtime();
	int ng = st->save_only_model ? 1 : 3, n = z->m->table.n;
	char tmp[TRL_PATH_MAX + 16];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	io->bytes = 0.0;
	h5_quiet();
	zero_flush(z);

	int *unit = tensor_units(z->m);
	uint64_t *sums = malloc((size_t)3 * n * 2 * sizeof *sums);
	char *yaml = NULL;
	size_t yaml_len = 0;
	FILE *mem = open_memstream(&yaml, &yaml_len);
	if (mem) {
		config_write_yaml(cfg, mem);
		if (fclose(mem) != 0) {
			free(yaml);
			yaml = NULL;
		}
	}
	int rc =
	    unit && sums && yaml ? TRL_OK : trl_errf(err, TRL_ENOMEM, "out of memory");
	if ((rc = comm_agree(&c, rc, err)))
		goto out;
	owned_checksums(z, unit, ng, sums);

	Reason why;
	hid_t fapl = file_access(z->comm);
	hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
	H5Pclose(fapl);
	if (f < 0)
		rc = trl_errf(err, TRL_EIO, "cannot create checkpoint %s: %s", tmp,
		              h5_reason(&why));
	if ((rc = comm_agree(&c, rc, err)))
		goto out;
	hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
	H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
	/* Each part runs even after another failed: the calls are collective,
	 * and a failure that only some ranks see must not leave the others
	 * waiting in a call those ranks skipped. */
	int bad = write_state(f, z->m, st, &z->opt[0]);
	bad |= write_config(f, yaml, z->rank, dxpl);
	bad |= write_rng(f, st, z->rank, dxpl);
	bad |= write_tensors(f, z, unit, ng, sums, dxpl, &io->bytes);
	/* The flush syncs the MPI-IO file on every rank (MPI_File_sync). */
	if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
		bad = 1;
	H5Pclose(dxpl);
	if (H5Fclose(f) < 0)
		bad = 1;
	if (bad)
		rc = trl_errf(err, TRL_EIO, "cannot write checkpoint %s: %s", tmp,
		              h5_reason(&why));
	if ((rc = comm_agree(&c, rc, err))) {
		if (z->rank == 0)
			unlink(tmp);
		goto out;
	}
	/* Only a complete, synced file takes the checkpoint's name. */
	if (z->rank == 0) {
		char dir[TRL_PATH_MAX];
		dir_of(path, dir, sizeof dir);
		if (trl_sync_path(tmp) != 0 || rename(tmp, path) != 0)
			rc = trl_errf(err, TRL_EIO, "cannot rename %s to %s: %s", tmp,
			              path, strerror(errno));
		else
			trl_sync_path(dir);
	}
	rc = comm_agree(&c, rc, err);
out:
	free(unit);
	free(sums);
	free(yaml);
	io->seconds = MPI_Wtime() - t0;
	return rc;
}

/* ---- load ----------------------------------------------------------------------- */

/* Opens every tensor of groups [0, ng) and checks its type and shape against
 * the table; d[k * n + i]. Same verdict on every rank (same metadata). */
static int open_tensors(hid_t f, const char *path, const ParamTable *tb,
                        const char *const *group, int ng, hid_t *d, uint64_t *stored,
                        TrlErr *err)
{
	Reason why;
	for (int k = 0; k < ng; k++)
		for (int i = 0; i < tb->n; i++) {
			const ParamInfo *t = &tb->p[i];
			char name[TRL_PARAM_NAME_MAX + 32];
			snprintf(name, sizeof name, "%s/%s", group[k], t->name);
			hid_t *di = &d[(size_t)k * tb->n + i];
			if (H5Lexists(f, group[k], H5P_DEFAULT) <= 0 ||
			    H5Lexists(f, name, H5P_DEFAULT) <= 0)
				return trl_errf(
				    err, TRL_EFORMAT,
				    "%s has no tensor %s (a damaged or incomplete "
				    "checkpoint, or another model)",
				    path, name);
			*di = H5Dopen2(f, name, H5P_DEFAULT);
			if (*di < 0)
				return trl_errf(
				    err, TRL_EFORMAT,
				    "%s: cannot open tensor %s: %s (the file is "
				    "damaged)",
				    path, name, h5_reason(&why));
			hid_t ty = H5Dget_type(*di), sp = H5Dget_space(*di);
			hsize_t dims[3] = {0, 0, 0};
			int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
			if (nd >= 0 && nd <= 3)
				H5Sget_simple_extent_dims(sp, dims, NULL);
			int is_f32 = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT &&
			             H5Tget_size(ty) == 4;
			if (ty >= 0)
				H5Tclose(ty);
			if (sp >= 0)
				H5Sclose(sp);
			int shape_ok = nd == t->ndim && dims[0] == t->shape[0] &&
			               (t->ndim == 1 || dims[1] == t->shape[1]);
			if (!is_f32)
				return trl_errf(err, TRL_EFORMAT,
				                "%s: tensor %s is not float32", path,
				                name);
			if (!shape_ok) {
				char have[64];
				if (nd == 1)
					snprintf(have, sizeof have, "(%llu)",
					         (unsigned long long)dims[0]);
				else
					snprintf(have, sizeof have, "(%llu, %llu%s)",
					         (unsigned long long)dims[0],
					         (unsigned long long)dims[1],
					         nd > 2 ? ", ..." : "");
				char want[64];
				if (t->ndim == 1)
					snprintf(want, sizeof want, "(%zu)", t->shape[0]);
				else
					snprintf(want, sizeof want, "(%zu, %zu)",
					         t->shape[0], t->shape[1]);
				return trl_errf(
				    err, TRL_EFORMAT,
				    "%s: tensor %s has shape %s, the model needs %s",
				    path, name, have, want);
			}
			uint64_t *s = stored + ((size_t)k * tb->n + i) * 2;
			hid_t a = H5Aexists(*di, "checksum") > 0
			              ? H5Aopen(*di, "checksum", H5P_DEFAULT)
			              : -1;
			int ok = a >= 0 && H5Aread(a, H5T_NATIVE_UINT64, s) >= 0;
			if (a >= 0)
				H5Aclose(a);
			if (!ok)
				return trl_errf(err, TRL_EFORMAT,
				                "%s: tensor %s has no checksum attribute",
				                path, name);
		}
	return TRL_OK;
}

int ckpt_load(const char *path, Zero *z, CkptState *st, CkptIo *io, TrlErr *err)
{
	Comm c = {z->comm, z->rank, z->N, 0, 1};
	const ParamTable *tb = &z->m->table;
	int n = tb->n, ng = 3;
	double t0 = MPI_Wtime();
	io->bytes = 0.0;
	h5_quiet();
	zero_flush(z);
	Reason why;
	hid_t *d = malloc((size_t)ng * n * sizeof *d);
	uint64_t *stored = malloc((size_t)ng * n * 2 * sizeof *stored);
	uint64_t *sums = malloc((size_t)ng * n * 2 * sizeof *sums);
	int *unit = tensor_units(z->m);
	for (int i = 0; d && i < ng * n; i++)
		d[i] = -1;
	hid_t f = -1, rd = -1;
	int rc = d && stored && sums && unit ? TRL_OK
	                                     : trl_errf(err, TRL_ENOMEM, "out of memory");
	if ((rc = comm_agree(&c, rc, err)))
		goto out;
	{
		hid_t fapl = file_access(z->comm);
		f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
		H5Pclose(fapl);
		if (f < 0)
			rc = trl_errf(
			    err, TRL_EFORMAT,
			    "cannot open checkpoint %s: %s (a truncated, damaged or "
			    "non-HDF5 file)",
			    path, h5_reason(&why));
	}
	if (!rc)
		rc = read_state(f, path, st, err);
	ModelConfig mc;
	if (!rc)
		rc = read_model_config(f, path, &mc, err);
	if (!rc)
		rc = same_model(&mc, &z->m->cfg, path, err);
	if (!rc && st->save_only_model)
		rc = trl_errf(err, TRL_EINVAL,
		              "%s was saved with save_only_model: it has no optimizer "
		              "state to resume from (export it with `trl-hpc export` and "
		              "start a new run from the folder)",
		              path);
	if (!rc)
		rc = open_tensors(f, path, tb, GROUP, ng, d, stored, err);
	hsize_t dims[2] = {0, 0}, four = 4;
	if (!rc) {
		rd = H5Lexists(f, "rng", H5P_DEFAULT) > 0
		         ? H5Dopen2(f, "rng", H5P_DEFAULT)
		         : -1;
		hid_t rs = rd >= 0 ? H5Dget_space(rd) : -1;
		if (rs >= 0 && H5Sget_simple_extent_ndims(rs) == 2)
			H5Sget_simple_extent_dims(rs, dims, NULL);
		if (rs >= 0)
			H5Sclose(rs);
		if (rd < 0 || dims[1] != 4 || dims[0] != (hsize_t)st->world_size)
			rc = trl_errf(err, TRL_EFORMAT,
			              "%s: rng is missing or not (world_size %d, 4) "
			              "(a damaged checkpoint)",
			              path, st->world_size);
	}
	if ((rc = comm_agree(&c, rc, err)))
		goto out;

	/* Every rank makes every collective read, even after one failed. */
	hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
	H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
	int bad = 0;
	for (int k = 0; k < ng; k++)
		for (int i = 0; i < n; i++) {
			size_t b, e, lo, hi;
			float *p = zero_region(z, unit[i], k, 1, &b, &e);
			clip_range(&tb->p[i], b, e, &lo, &hi);
			bad |= move_range(d[(size_t)k * n + i], &tb->p[i], lo, hi,
			                  p + (tb->p[i].offset + lo - b), 0, dxpl);
			io->bytes += 4.0 * (double)(hi - lo);
		}
	/* /rng: my row when the writing run had this rank, else zeros (the
	 * caller seeds a fresh generator). */
	memset(st->rng, 0, sizeof st->rng);
	hsize_t start[2] = {(hsize_t)z->rank, 0}, count[2] = {1, 4};
	hid_t rs = H5Dget_space(rd);
	hid_t ms = H5Screate_simple(1, &four, NULL);
	if (z->rank < st->world_size) {
		H5Sselect_hyperslab(rs, H5S_SELECT_SET, start, NULL, count, NULL);
	} else {
		H5Sselect_none(rs);
		H5Sselect_none(ms);
	}
	bad |= H5Dread(rd, H5T_NATIVE_UINT64, ms, rs, dxpl, st->rng) < 0;
	H5Sclose(ms);
	H5Sclose(rs);
	H5Pclose(dxpl);
	if (bad)
		rc = trl_errf(err, TRL_EIO, "cannot read checkpoint %s: %s", path,
		              h5_reason(&why));
	if ((rc = comm_agree(&c, rc, err)))
		goto out;

	owned_checksums(z, unit, ng, sums);
	for (int j = 0; j < ng * n && !rc; j++)
		if (sums[2 * j] != stored[2 * j] || sums[2 * j + 1] != stored[2 * j + 1])
			rc = trl_errf(
			    err, TRL_EFORMAT,
			    "%s: tensor %s/%s does not match its checksum: the "
			    "file is damaged (resume from an earlier checkpoint)",
			    path, GROUP[j / n], tb->p[j % n].name);
	if (!rc)
		zero_loaded(z, 1, st->adam_step);
out:
	for (int i = 0; d && i < ng * n; i++)
		if (d[i] >= 0)
			H5Dclose(d[i]);
	if (rd >= 0)
		H5Dclose(rd);
	if (f >= 0)
		H5Fclose(f);
	free(d);
	free(stored);
	free(sums);
	free(unit);
	io->seconds = MPI_Wtime() - t0;
	return rc;
}

/* ---- one-process readers: export and inspect -------------------------------------- */

static hid_t open_serial(const char *path, TrlErr *err)
{
	Reason why;
	h5_quiet();
	hid_t fapl = file_access(MPI_COMM_NULL);
	hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
	H5Pclose(fapl);
	if (f < 0)
		trl_errf(
		    err, TRL_EFORMAT,
		    "cannot open checkpoint %s: %s (a truncated, damaged or non-HDF5 "
		    "file)",
		    path, h5_reason(&why));
	return f;
}

/* Reads the whole tensor k/i into dst and checks its checksum. */
static int read_whole(hid_t f, const char *path, const ParamInfo *t, int k, float *dst,
                      TrlErr *err)
{
	char name[TRL_PARAM_NAME_MAX + 32];
	snprintf(name, sizeof name, "%s/%s", GROUP[k], t->name);
	ParamTable one = {(ParamInfo *)t, 1, t->numel, NULL, NULL, 0};
	hid_t d = -1;
	uint64_t stored[2], sum[2] = {0, 0};
	int rc = open_tensors(f, path, &one, GROUP + k, 1, &d, stored, err);
	if (rc) {
		if (d >= 0)
			H5Dclose(d);
		return rc;
	}
	Reason why;
	if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
		rc = trl_errf(err, TRL_EIO, "%s: cannot read %s: %s", path, name,
		              h5_reason(&why));
	H5Dclose(d);
	if (!rc) {
		checksum_add(dst, t->numel, 0, sum);
		if (sum[0] != stored[0] || sum[1] != stored[1])
			rc = trl_errf(
			    err, TRL_EFORMAT,
			    "%s: tensor %s does not match its checksum: the file "
			    "is damaged",
			    path, name);
	}
	return rc;
}

int ckpt_read_model(const char *path, Model *m, Lora *lo, CkptState *st, char **yaml,
                    TrlErr *err)
{
	*yaml = NULL;
	memset(lo, 0, sizeof *lo);
	hid_t f = open_serial(path, err);
	if (f < 0)
		return err->code;
	ModelConfig mc;
	LoraSpec spec;
	int rc = read_state(f, path, st, err);
	if (!rc)
		rc = read_model_config(f, path, &mc, err);
	if (!rc && st->lora[0]) {
		rc = lora_spec_parse(&spec, st->lora, err);
		if (!rc)
			rc =
			    model_init_flags(m, &mc, MODEL_FROZEN | MODEL_NO_PARAMS, err);
		if (!rc)
			rc = lora_init(lo, m, &spec, 0, 0, NULL, 0, err);
	} else if (!rc) {
		rc = model_init(m, &mc, err);
	}
	Model *t = st->lora[0] ? &lo->ad : m; /* what the file holds */
	for (int i = 0; !rc && i < t->table.n; i++)
		rc = read_whole(f, path, &t->table.p[i], 0,
		                t->params + t->table.p[i].offset, err);
	if (!rc && !(*yaml = read_string(f, "config", 1)))
		rc = trl_errf(err, TRL_EFORMAT, "%s: /config is missing", path);
	H5Fclose(f);
	if (rc) {
		lora_free(lo);
		model_free(m);
		free(*yaml);
		*yaml = NULL;
	}
	return rc;
}

int ckpt_read_state(const char *path, CkptState *st, TrlErr *err)
{
	hid_t f = open_serial(path, err);
	if (f < 0)
		return err->code;
	int rc = read_state(f, path, st, err);
	H5Fclose(f);
	return rc;
}

int ckpt_inspect(const char *path, FILE *out, TrlErr *err)
{
	hid_t f = open_serial(path, err);
	if (f < 0)
		return err->code;
	CkptState st;
	ModelConfig mc;
	Model m;
	memset(&m, 0, sizeof m);
	Lora lo;
	memset(&lo, 0, sizeof lo);
	LoraSpec spec;
	char *yaml = NULL;
	int rc = read_state(f, path, &st, err);
	if (!rc)
		rc = read_model_config(f, path, &mc, err);
	if (!rc)
		rc = model_init_flags(&m, &mc, MODEL_NO_GRADS | MODEL_NO_PARAMS, err);
	/* A LoRA checkpoint holds the adapters' tensors. */
	if (!rc && st.lora[0])
		rc = lora_spec_parse(&spec, st.lora, err);
	if (!rc && st.lora[0])
		rc = lora_init(&lo, &m, &spec, MODEL_NO_GRADS | MODEL_NO_PARAMS, 0, NULL,
		               0, err);
	const ParamTable *tt = st.lora[0] ? &lo.ad.table : &m.table;
	if (!rc && !(yaml = read_string(f, "config", 1)))
		rc = trl_errf(err, TRL_EFORMAT, "%s: /config is missing", path);
	if (rc)
		goto out;
	char *ver = read_string(f, "trl_hpc_version", 0);
	static const char *const sched[] = {"constant", "constant_with_warmup", "linear",
	                                    "cosine"};
	fprintf(out, "checkpoint: %s\n", path);
	fprintf(out, "format: %s version %d, written by trl-hpc %s\n", CKPT_FORMAT_NAME,
	        CKPT_FORMAT_VERSION, ver ? ver : "?");
	free(ver);
	fprintf(out, "global_step: %ld of %ld\nepoch: %.4f\nnum_tokens: %ld\n",
	        st.global_step, st.total_steps, st.epoch, st.num_tokens);
	fprintf(out, "written by: %d rank%s, zero_stage %d%s\n", st.world_size,
	        st.world_size > 1 ? "s" : "", st.zero_stage,
	        st.save_only_model ? ", model only (save_only_model)" : "");
	fprintf(out, "sampler: seed %ld, %ld samples seen, %ld rows per step, %ld rows\n",
	        st.seed, st.samples_seen, st.rows_per_step, st.num_rows);
	fprintf(out, "scheduler: %s, learning_rate %g, warmup_steps %ld, last_lr %g\n",
	        st.lr_scheduler_type >= 0 && st.lr_scheduler_type < 4
	            ? sched[st.lr_scheduler_type]
	            : "?",
	        st.learning_rate, st.warmup_steps, st.last_lr);
	if (!st.save_only_model)
		fprintf(out, "optimizer: AdamW, step %ld\n", st.adam_step);
	fprintf(out, "model: %s (%s), %zu parameters in %d tensors\n",
	        model_hf_arch_name(mc.model_type), model_arch_name(mc.arch),
	        model_config_num_params(&mc), m.table.n);
	if (st.lora[0])
		fprintf(out, "adapters: LoRA %s (%d tensors; base %s)\n", st.lora,
		        lo.ad.table.n, st.model_name_or_path);
	fprintf(out, "config:\n");
	for (char *line = yaml; line && *line;) {
		char *nl = strchr(line, '\n');
		int len = nl ? (int)(nl - line) : (int)strlen(line);
		fprintf(out, "  %.*s\n", len, line);
		line = nl ? nl + 1 : NULL;
	}
	/* Every tensor is read back and its checksum checked. */
	size_t maxn = 0;
	for (int i = 0; i < tt->n; i++)
		maxn = tt->p[i].numel > maxn ? tt->p[i].numel : maxn;
	float *buf = malloc(maxn * sizeof *buf);
	if (!buf) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory");
		goto out;
	}
	int ng = st.save_only_model ? 1 : 3;
	fprintf(out, "tensors (float32; checksums verified):\n");
	for (int i = 0; i < tt->n && !rc; i++) {
		const ParamInfo *t = &tt->p[i];
		for (int k = 0; k < ng && !rc; k++)
			rc = read_whole(f, path, t, k, buf, err);
		if (t->ndim == 1)
			fprintf(out, "  %-48s (%zu)\n", t->name, t->shape[0]);
		else
			fprintf(out, "  %-48s (%zu, %zu)\n", t->name, t->shape[0],
			        t->shape[1]);
	}
	if (!rc)
		fprintf(out, "groups: %s\n",
		        ng == 3 ? "model, optimizer/exp_avg, optimizer/exp_avg_sq"
		                : "model");
	free(buf);
out:
	free(yaml);
	lora_free(&lo);
	model_free(&m);
	H5Fclose(f);
	return rc;
}
