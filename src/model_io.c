/* model_io.c - model folders in and out: config.json and model.safetensors. */
#include "model_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "safetensors.h"

static int write_config_json(const ModelConfig *mc, const char *path, TrlErr *err)
{
	JsonBuf b = {0};
	model_config_hf_json(mc, &b);
	if (b.oom) {
		json_buf_free(&b);
		return trl_errf(err, TRL_ENOMEM, "out of memory writing %s", path);
	}
	char tmp[4400];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	int ok = f && fwrite(b.p, 1, b.len, f) == b.len;
	if (f && fclose(f) != 0)
		ok = 0;
	json_buf_free(&b);
	if (!ok || rename(tmp, path) != 0)
		return trl_errf(err, TRL_EIO, "cannot write %s: %s", path,
		                strerror(errno));
	return TRL_OK;
}

int model_save_dir(const Model *m, const char *dir, TrlErr *err)
{
	int rc = trl_mkdirs(dir, err);
	if (rc)
		return rc;
	char path[4200];
	snprintf(path, sizeof path, "%s/config.json", dir);
	rc = write_config_json(&m->cfg, path, err);
	if (rc)
		return rc;
	const ParamTable *t = &m->table;
	StTensor *st = calloc((size_t)t->n, sizeof *st);
	if (!st)
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	for (int i = 0; i < t->n; i++) {
		const ParamInfo *p = &t->p[i];
		snprintf(st[i].name, sizeof st[i].name, "%s", p->name);
		st[i].dtype = ST_F32;
		st[i].ndim = p->ndim;
		st[i].shape[0] = (int64_t)p->shape[0];
		st[i].shape[1] = (int64_t)p->shape[1];
		st[i].data = m->params + p->offset;
		st[i].nbytes = p->numel * sizeof(float);
	}
	const char *meta[] = {"format", "pt"};
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	rc = st_write(path, st, t->n, meta, 1, err);
	free(st);
	return rc;
}

static int get_int(const JsonValue *root, const char *path, const char *key, int *out,
                   int required, TrlErr *err)
{
	const JsonValue *v = json_get(root, key);
	int64_t x;
	if (!v) {
		if (required)
			return trl_errf(err, TRL_EFORMAT, "%s: key '%s' is missing", path,
			                key);
		return TRL_OK;
	}
	if (v->type == JSON_NULL && !required)
		return TRL_OK;
	if (json_int(v, &x) != 0 || x < 0 || x > 1 << 30)
		return trl_errf(err, TRL_EFORMAT,
		                "%s: '%s' must be a non-negative integer", path, key);
	*out = (int)x;
	return TRL_OK;
}

static int get_float(const JsonValue *root, const char *path, const char *key, float *out,
                     TrlErr *err)
{
	const JsonValue *v = json_get(root, key);
	double x;
	if (!v || v->type == JSON_NULL)
		return TRL_OK;
	if (json_num(v, &x) != 0)
		return trl_errf(err, TRL_EFORMAT, "%s: '%s' must be a number", path, key);
	*out = (float)x;
	return TRL_OK;
}

static int get_bool(const JsonValue *root, const char *path, const char *key, int *out,
                    TrlErr *err)
{
	const JsonValue *v = json_get(root, key);
	if (!v)
		return TRL_OK;
	if (v->type != JSON_BOOL)
		return trl_errf(err, TRL_EFORMAT, "%s: '%s' must be true or false", path,
		                key);
	*out = v->boolean;
	return TRL_OK;
}

int model_config_load_json(ModelConfig *mc, const char *path, TrlErr *err)
{
	JsonValue *root = NULL;
	int rc = json_load_file(path, &root, err);
	if (rc)
		return rc;
	memset(mc, 0, sizeof *mc);
	mc->rope_theta = 10000.0f;
	mc->norm_eps = 1e-5f;
	mc->initializer_range = 0.02f;
	mc->tie_word_embeddings = 1;
	const char *type = json_str(json_get(root, "model_type"));
	if (!type) {
		rc = trl_errf(err, TRL_EFORMAT, "%s: 'model_type' is missing", path);
	} else if (strcmp(type, "gpt2") == 0) {
		mc->arch = TRL_ARCH_GPT2;
		mc->intermediate_size = 0;
		rc = get_int(root, path, "vocab_size", &mc->vocab_size, 1, err);
		if (!rc)
			rc = get_int(root, path, "n_embd", &mc->hidden_size, 1, err);
		if (!rc)
			rc = get_int(root, path, "n_layer", &mc->num_hidden_layers, 1,
			             err);
		if (!rc)
			rc = get_int(root, path, "n_head", &mc->num_attention_heads, 1,
			             err);
		if (!rc)
			rc = get_int(root, path, "n_inner", &mc->intermediate_size, 0,
			             err);
		if (!rc)
			rc = get_int(root, path, "n_positions",
			             &mc->max_position_embeddings, 1, err);
		if (!rc)
			rc = get_float(root, path, "layer_norm_epsilon", &mc->norm_eps,
			               err);
	} else if (strcmp(type, "llama") == 0) {
		mc->arch = TRL_ARCH_LLAMA;
		mc->tie_word_embeddings = 0;
		rc = get_int(root, path, "vocab_size", &mc->vocab_size, 1, err);
		if (!rc)
			rc = get_int(root, path, "hidden_size", &mc->hidden_size, 1, err);
		if (!rc)
			rc = get_int(root, path, "num_hidden_layers",
			             &mc->num_hidden_layers, 1, err);
		if (!rc)
			rc = get_int(root, path, "num_attention_heads",
			             &mc->num_attention_heads, 1, err);
		if (!rc)
			rc = get_int(root, path, "num_key_value_heads",
			             &mc->num_key_value_heads, 0, err);
		if (!rc)
			rc = get_int(root, path, "intermediate_size",
			             &mc->intermediate_size, 1, err);
		if (!rc)
			rc = get_int(root, path, "max_position_embeddings",
			             &mc->max_position_embeddings, 1, err);
		if (!rc)
			rc = get_float(root, path, "rms_norm_eps", &mc->norm_eps, err);
		if (!rc)
			rc = get_float(root, path, "rope_theta", &mc->rope_theta, err);
		if (!rc)
			rc = get_bool(root, path, "attention_bias", &mc->attention_bias,
			              err);
	} else {
		rc = trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "%s: model_type '%s' is not supported (supported: llama, gpt2)", path,
		    type);
	}
	if (!rc)
		rc = get_bool(root, path, "tie_word_embeddings", &mc->tie_word_embeddings,
		              err);
	if (!rc)
		rc = get_float(root, path, "initializer_range", &mc->initializer_range,
		               err);
	json_free(root);
	return rc;
}

int model_load_dir(Model *m, const char *dir, TrlErr *err)
{
	char path[4200];
	ModelConfig mc;
	snprintf(path, sizeof path, "%s/config.json", dir);
	int rc = model_config_load_json(&mc, path, err);
	if (rc)
		return rc;
	rc = model_init(m, &mc, err);
	if (rc)
		return rc;
	StFile f = {0};
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	rc = st_open(&f, path, err);
	if (rc)
		goto fail;
	for (int i = 0; i < m->table.n; i++) {
		const ParamInfo *p = &m->table.p[i];
		const StTensor *t = st_find(&f, p->name);
		if (!t) {
			rc = trl_errf(err, TRL_EFORMAT, "%s: tensor '%s' is missing",
			              path, p->name);
			goto fail;
		}
		int shape_ok = t->ndim == p->ndim &&
		               t->shape[0] == (int64_t)p->shape[0] &&
		               (p->ndim < 2 || t->shape[1] == (int64_t)p->shape[1]);
		if (!shape_ok || t->dtype != ST_F32) {
			rc = trl_errf(
			    err, TRL_EFORMAT,
			    "%s: tensor '%s' has the wrong shape or dtype (expected "
			    "F32 [%zu%s%zu] from config.json)",
			    path, p->name, p->shape[0], p->ndim > 1 ? ", " : "",
			    p->ndim > 1 ? p->shape[1] : (size_t)0);
			goto fail;
		}
		memcpy(m->params + p->offset, t->data, p->numel * sizeof(float));
	}
	st_close(&f);
	return TRL_OK;
fail:
	st_close(&f);
	model_free(m);
	return rc;
}
