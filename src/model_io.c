/* model_io.c - Hugging Face model folders in and out: config.json, model.safetensors
 * (or shards behind model.safetensors.index.json), generation_config.json and
 * the tokenizer files. */
#include "model_io.h"

#include "lora.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "safetensors.h"

#define PATH_CAP 4200

static int file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int model_io_write_file(const char *path, const char *data, size_t len, TrlErr *err)
{
	char tmp[PATH_CAP + 8];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	int ok = f && fwrite(data, 1, len, f) == len;
	if (f && fclose(f) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return trl_errf(err, TRL_EIO, "cannot write %s: %s", path, strerror(e));
	}
	return TRL_OK;
}

static int write_json_buf(JsonBuf *b, const char *path, TrlErr *err)
{
	int rc = b->oom ? trl_errf(err, TRL_ENOMEM, "out of memory writing %s", path)
	                : model_io_write_file(path, b->p, b->len, err);
	json_buf_free(b);
	return rc;
}

/* ---- export ---------------------------------------------------------------- */

static const char *const tokenizer_files[] = {"tokenizer.json", "tokenizer_config.json",
                                              "special_tokens_map.json"};

static int copy_file(const char *src, const char *dst, TrlErr *err)
{
	char *buf;
	size_t len;
	int rc = trl_read_file(src, &buf, &len, err);
	if (rc)
		return rc;
	rc = model_io_write_file(dst, buf, len, err);
	trl_free(buf);
	return rc;
}

static void put_id(JsonBuf *b, const char *key, int id, int last)
{
	if (id >= 0)
		json_buf_printf(b, "  \"%s\": %d%s\n", key, id, last ? "" : ",");
	else
		json_buf_printf(b, "  \"%s\": null%s\n", key, last ? "" : ",");
}

/* generation_config.json: the given ids; without any, the source folder's
 * file when it has one (a fine-tuned model keeps its base's settings). */
static int write_generation_config(const char *dir, const ModelExportOpts *o, TrlErr *err)
{
	char path[PATH_CAP], src[PATH_CAP];
	snprintf(path, sizeof path, "%s/generation_config.json", dir);
	if (o->bos_token_id < 0 && o->eos_token_id < 0 && o->tokenizer_dir) {
		snprintf(src, sizeof src, "%s/generation_config.json", o->tokenizer_dir);
		if (file_exists(src))
			return copy_file(src, path, err);
	}
	JsonBuf b = {0};
	json_buf_puts(&b, "{\n  \"_from_model_config\": true,\n");
	put_id(&b, "bos_token_id", o->bos_token_id, 0);
	put_id(&b, "eos_token_id", o->eos_token_id, 1);
	json_buf_puts(&b, "}\n");
	return write_json_buf(&b, path, err);
}

int model_export_dir(const Model *m, const char *dir, const ModelExportOpts *opts,
                     TrlErr *err)
{
	ModelExportOpts def = MODEL_EXPORT_DEFAULTS;
	const ModelExportOpts *o = opts ? opts : &def;
	if (o->dtype != ST_F32 && o->dtype != ST_BF16)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "model export: dtype %s is not supported (F32 or BF16)",
		                st_dtype_name(o->dtype));
	int rc = trl_mkdirs(dir, err);
	if (rc)
		return rc;
	char path[PATH_CAP];
	JsonBuf b = {0};
	model_config_hf_json(&m->cfg, o->dtype == ST_BF16 ? "bfloat16" : "float32", &b);
	snprintf(path, sizeof path, "%s/config.json", dir);
	rc = write_json_buf(&b, path, err);
	if (rc)
		return rc;

	const ParamTable *t = &m->table;
	StTensor *st = calloc((size_t)t->n, sizeof *st);
	uint16_t *half = NULL;
	if (o->dtype == ST_BF16)
		half = malloc(t->total * sizeof *half);
	if (!st || (o->dtype == ST_BF16 && !half)) {
		free(st);
		free(half);
		return trl_errf(err, TRL_ENOMEM, "out of memory exporting the model");
	}
	for (int i = 0; i < t->n; i++) {
		const ParamInfo *p = &t->p[i];
		const float *x = m->params + p->offset;
		snprintf(st[i].name, sizeof st[i].name, "%s", p->name);
		st[i].ndim = params_file_shape(p, st[i].shape);
		if (half) {
			uint16_t *h = half + p->offset;
			for (size_t j = 0; j < p->numel; j++)
				h[j] = st_f32_to_bf16(x[j]);
			st[i].dtype = ST_BF16;
			st[i].data = h;
			st[i].nbytes = p->numel * sizeof *h;
		} else {
			st[i].dtype = ST_F32;
			st[i].data = x;
			st[i].nbytes = p->numel * sizeof(float);
		}
	}
	const char *meta[] = {"format", "pt"};
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	rc = st_write(path, st, t->n, meta, 1, err);
	free(st);
	free(half);
	if (rc)
		return rc;
	/* An index left from an earlier sharded save would point loaders at
	 * stale shards; the single file replaces it. */
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	unlink(path);

	rc = write_generation_config(dir, o, err);
	if (rc)
		return rc;
	return o->tokenizer_dir ? model_io_copy_tokenizer(o->tokenizer_dir, dir, err)
	                        : TRL_OK;
}

int model_io_copy_tokenizer(const char *from, const char *dir, TrlErr *err)
{
	for (size_t i = 0; i < sizeof tokenizer_files / sizeof *tokenizer_files; i++) {
		char src[PATH_CAP], path[PATH_CAP];
		snprintf(src, sizeof src, "%s/%s", from, tokenizer_files[i]);
		snprintf(path, sizeof path, "%s/%s", dir, tokenizer_files[i]);
		if (!file_exists(src) || strcmp(src, path) == 0)
			continue;
		int rc = copy_file(src, path, err);
		if (rc)
			return rc;
	}
	return TRL_OK;
}

int model_save_dir(const Model *m, const char *dir, TrlErr *err)
{
	return model_export_dir(m, dir, NULL, err);
}

/* ---- config.json ------------------------------------------------------------ */

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
	if (!v || v->type == JSON_NULL)
		return TRL_OK;
	if (v->type != JSON_BOOL)
		return trl_errf(err, TRL_EFORMAT, "%s: '%s' must be true or false", path,
		                key);
	*out = v->boolean;
	return TRL_OK;
}

/* A string key that, when present and not null, must be one of the allowed
 * values (NULL-terminated list). */
static int check_str(const JsonValue *root, const char *path, const char *key,
                     const char *const *allowed, TrlErr *err)
{
	const JsonValue *v = json_get(root, key);
	if (!v || v->type == JSON_NULL)
		return TRL_OK;
	const char *s = json_str(v);
	for (int i = 0; s && allowed[i]; i++)
		if (strcmp(s, allowed[i]) == 0)
			return TRL_OK;
	return trl_errf(
	    err, TRL_EUNSUPPORTED, "%s: %s = %s%s%s is not supported (only %s)", path,
	    key, s ? "'" : "", s ? s : json_type_name(v->type), s ? "'" : "", allowed[0]);
}

/* The llama-style shape keys; with required, the first four must be there
 * (lfm2's config class has defaults for all but hidden_size). */
static int get_shape_keys(ModelConfig *mc, const JsonValue *root, const char *path,
                          int required, TrlErr *err)
{
	int rc = get_int(root, path, "vocab_size", &mc->vocab_size, required, err);
	if (!rc)
		rc = get_int(root, path, "hidden_size", &mc->hidden_size, 1, err);
	if (!rc)
		rc = get_int(root, path, "num_hidden_layers", &mc->num_hidden_layers,
		             required, err);
	if (!rc)
		rc = get_int(root, path, "num_attention_heads", &mc->num_attention_heads,
		             required, err);
	if (!rc)
		rc = get_int(root, path, "num_key_value_heads", &mc->num_key_value_heads,
		             0, err);
	if (!rc)
		rc = get_int(root, path, "head_dim", &mc->head_dim, 0, err);
	return rc;
}

static int load_gpt2_keys(ModelConfig *mc, const JsonValue *root, const char *path,
                          TrlErr *err)
{
	static const char *const act[] = {"gelu_new", "gelu_pytorch_tanh", NULL};
	mc->arch = TRL_ARCH_GPT2;
	mc->tie_word_embeddings = 1;
	int rc = get_int(root, path, "vocab_size", &mc->vocab_size, 1, err);
	if (!rc)
		rc = get_int(root, path, "n_embd", &mc->hidden_size, 1, err);
	if (!rc)
		rc = get_int(root, path, "n_layer", &mc->num_hidden_layers, 1, err);
	if (!rc)
		rc = get_int(root, path, "n_head", &mc->num_attention_heads, 1, err);
	if (!rc)
		rc = get_int(root, path, "n_inner", &mc->intermediate_size, 0, err);
	if (!rc)
		rc = get_int(root, path, "n_positions", &mc->max_position_embeddings, 1,
		             err);
	if (!rc)
		rc = get_float(root, path, "layer_norm_epsilon", &mc->norm_eps, err);
	if (!rc)
		rc = check_str(root, path, "activation_function", act, err);
	return rc;
}

static int load_llama_keys(ModelConfig *mc, const JsonValue *root, const char *path,
                           TrlErr *err)
{
	static const char *const act[] = {"silu", NULL};
	TrlHfType t = mc->model_type;
	mc->arch = TRL_ARCH_LLAMA;
	mc->tie_word_embeddings = 0;
	mc->norm_eps = 1e-6f;
	mc->max_position_embeddings = t == TRL_HF_LLAMA ? 2048 : 32768;
	int rc = get_shape_keys(mc, root, path, 1, err);
	if (!rc)
		rc = get_int(root, path, "intermediate_size", &mc->intermediate_size, 1,
		             err);
	if (!rc)
		rc = get_int(root, path, "max_position_embeddings",
		             &mc->max_position_embeddings, 0, err);
	if (!rc)
		rc = get_float(root, path, "rms_norm_eps", &mc->norm_eps, err);
	if (!rc)
		rc = get_float(root, path, "rope_theta", &mc->rope_theta, err);
	if (!rc && t != TRL_HF_QWEN2 && t != TRL_HF_MISTRAL)
		rc = get_bool(root, path, "attention_bias", &mc->attention_bias, err);
	if (!rc)
		rc = check_str(root, path, "hidden_act", act, err);
	if (rc)
		return rc;
	const JsonValue *v = json_get(root, "rope_scaling");
	if (v && v->type != JSON_NULL) {
		const char *kind = json_str(json_get(v, "rope_type"));
		if (!kind)
			kind = json_str(json_get(v, "type"));
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "%s: rope_scaling (%s) is not supported; only plain "
		                "RoPE (rope_scaling: null) is implemented",
		                path, kind ? kind : "non-null");
	}
	int mlp_bias = 0;
	rc = get_bool(root, path, "mlp_bias", &mlp_bias, err);
	if (!rc && mlp_bias)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "%s: mlp_bias = true is not supported", path);
	int window = 0, use_window = t == TRL_HF_MISTRAL;
	if (!rc && (t == TRL_HF_QWEN2 || t == TRL_HF_QWEN3))
		rc = get_bool(root, path, "use_sliding_window", &use_window, err);
	if (!rc && t != TRL_HF_LLAMA)
		rc = get_int(root, path, "sliding_window", &window, 0, err);
	mc->sliding_window = use_window ? window : 0;
	return rc;
}

/* Lfm2Config's keys: the effective FFN width from intermediate_size (or the
 * legacy block_ff_dim) as Hugging Face adjusts it, the layer kinds from
 * layer_types (or full_attn_idxs; neither: every layer attends), the
 * tie_embedding alias and rope_parameters.rope_theta. */
static int load_lfm2_keys(ModelConfig *mc, const JsonValue *root, const char *path,
                          TrlErr *err)
{
	mc->arch = TRL_ARCH_LFM2;
	mc->tie_word_embeddings = 1;
	mc->norm_eps = 1e-5f;
	mc->rope_theta = 1e6f;
	mc->max_position_embeddings = 128000;
	mc->conv_L_cache = 3;
	mc->vocab_size = 65536;
	mc->num_hidden_layers = 32;
	mc->num_attention_heads = 32;
	mc->num_key_value_heads = 8;
	int F = 12288, adjust = 1, multiple = 256;
	int rc = get_shape_keys(mc, root, path, 0, err);
	if (!rc)
		rc = get_int(root, path, "intermediate_size", &F, 0, err);
	if (!rc)
		rc = get_int(root, path, "block_ff_dim", &F, 0, err);
	if (!rc)
		rc = get_bool(root, path, "block_auto_adjust_ff_dim", &adjust, err);
	if (!rc)
		rc = get_int(root, path, "block_multiple_of", &multiple, 0, err);
	if (!rc)
		rc = get_int(root, path, "max_position_embeddings",
		             &mc->max_position_embeddings, 0, err);
	if (!rc)
		rc = get_float(root, path, "norm_eps", &mc->norm_eps, err);
	if (!rc)
		rc = get_float(root, path, "rope_theta", &mc->rope_theta, err);
	if (!rc && json_get(root, "rope_parameters"))
		rc = get_float(json_get(root, "rope_parameters"), path, "rope_theta",
		               &mc->rope_theta, err);
	if (!rc)
		rc = get_int(root, path, "conv_L_cache", &mc->conv_L_cache, 0, err);
	if (!rc)
		rc = get_bool(root, path, "conv_bias", &mc->conv_bias, err);
	if (!rc)
		rc = get_bool(root, path, "tie_word_embeddings", &mc->tie_word_embeddings,
		              err);
	if (!rc)
		rc = get_bool(root, path, "tie_embedding", &mc->tie_word_embeddings, err);
	if (rc)
		return rc;
	if (adjust) {
		F = (int)(2 * (long)F / 3);
		const JsonValue *mult = json_get(root, "block_ffn_dim_multiplier");
		double m = 1.0;
		if (!mult || mult->type != JSON_NULL) {
			if (mult && json_num(mult, &m) != 0)
				return trl_errf(
				    err, TRL_EFORMAT,
				    "%s: 'block_ffn_dim_multiplier' must be a number "
				    "or null",
				    path);
			if (multiple < 1)
				return trl_errf(
				    err, TRL_EFORMAT,
				    "%s: 'block_multiple_of' must be positive", path);
			F = (int)(m * F);
			F = multiple * ((F + multiple - 1) / multiple);
		}
	}
	mc->intermediate_size = F;
	int L = mc->num_hidden_layers;
	if (L < 1 || L > TRL_MAX_LAYERS)
		return trl_errf(err, TRL_EFORMAT, "%s: num_hidden_layers %d (1 to %d)",
		                path, L, TRL_MAX_LAYERS);
	const JsonValue *types = json_get(root, "layer_types");
	const JsonValue *idxs = json_get(root, "full_attn_idxs");
	for (int l = 0; l < L; l++)
		mc->attn_layer[l] = 1;
	if (types && types->type != JSON_NULL) {
		if (types->type != JSON_ARRAY || (int)types->len != L)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "%s: 'layer_types' must list one of \"full_attention\" or "
			    "\"conv\" for each of the %d layers",
			    path, L);
		for (int l = 0; l < L; l++) {
			const char *s = json_str(json_at(types, (size_t)l));
			if (!s || (strcmp(s, "full_attention") && strcmp(s, "conv")))
				return trl_errf(err, TRL_EFORMAT,
				                "%s: layer_types[%d] is %s%s%s, not "
				                "\"full_attention\" or \"conv\"",
				                path, l, s ? "'" : "",
				                s ? s : "not a string", s ? "'" : "");
			mc->attn_layer[l] = strcmp(s, "full_attention") == 0;
		}
	} else if (idxs && idxs->type != JSON_NULL) {
		if (idxs->type != JSON_ARRAY)
			return trl_errf(
			    err, TRL_EFORMAT,
			    "%s: 'full_attn_idxs' must be a list of layer indices", path);
		for (int l = 0; l < L; l++)
			mc->attn_layer[l] = 0;
		for (size_t i = 0; i < idxs->len; i++) {
			int64_t x;
			if (json_int(json_at(idxs, i), &x) != 0 || x < 0 || x >= L)
				return trl_errf(
				    err, TRL_EFORMAT,
				    "%s: full_attn_idxs[%zu] is not a layer index "
				    "below %d",
				    path, i, L);
			mc->attn_layer[x] = 1;
		}
	}
	return TRL_OK;
}

static int config_from_json(ModelConfig *mc, const JsonValue *root, const char *path,
                            TrlErr *err)
{
	int rc = TRL_OK;
	memset(mc, 0, sizeof *mc);
	mc->rope_theta = 10000.0f;
	mc->norm_eps = 1e-5f;
	mc->initializer_range = 0.02f;
	const char *type = json_str(json_get(root, "model_type"));
	const JsonValue *archs = json_get(root, "architectures");
	const char *arch = json_str(json_at(archs, 0));
	if (!type) {
		rc = trl_errf(err, TRL_EFORMAT, "%s: 'model_type' is missing", path);
	} else if (model_hf_type_parse(type, &mc->model_type) != 0) {
		rc = trl_errf(err, TRL_EUNSUPPORTED,
		              "%s: model_type '%s' is not supported (supported: llama, "
		              "qwen2, qwen3, mistral, gpt2, lfm2)",
		              path, type);
	} else if (arch && strcmp(arch, model_hf_arch_name(mc->model_type)) != 0 &&
	           strcmp(arch, model_hf_cls_name(mc->model_type)) != 0) {
		rc = trl_errf(err, TRL_EUNSUPPORTED,
		              "%s: architecture '%s' is not supported for model_type "
		              "'%s' (only %s or %s)",
		              path, arch, type, model_hf_arch_name(mc->model_type),
		              model_hf_cls_name(mc->model_type));
	} else if (mc->model_type == TRL_HF_GPT2) {
		rc = load_gpt2_keys(mc, root, path, err);
	} else if (mc->model_type == TRL_HF_LFM2) {
		rc = load_lfm2_keys(mc, root, path, err);
	} else {
		rc = load_llama_keys(mc, root, path, err);
	}
	if (!rc && mc->model_type != TRL_HF_LFM2) /* lfm2 also reads its alias */
		rc = get_bool(root, path, "tie_word_embeddings", &mc->tie_word_embeddings,
		              err);
	if (!rc)
		rc = get_float(root, path, "initializer_range", &mc->initializer_range,
		               err);
	/* A sequence classifier has as many labels as id2label names
	 * (transformers' num_labels; its default is 2). */
	if (!rc && arch && strcmp(arch, model_hf_cls_name(mc->model_type)) == 0) {
		const JsonValue *labels = json_get(root, "id2label");
		int64_t n = 2;
		if (labels && labels->type == JSON_OBJECT)
			n = (int64_t)labels->len;
		else if (json_get(root, "num_labels"))
			json_int(json_get(root, "num_labels"), &n);
		if (n < 1 || n > 1 << 20)
			rc = trl_errf(err, TRL_EFORMAT, "%s: %lld labels (id2label)",
			              path, (long long)n);
		mc->num_labels = (int)n;
		int64_t pad = -1;
		if (!rc && json_get(root, "pad_token_id"))
			json_int(json_get(root, "pad_token_id"), &pad);
		mc->pad_token_id = pad >= 0 && pad <= INT32_MAX ? (int)pad : -1;
	}
	return rc;
}

int model_config_load_json(ModelConfig *mc, const char *path, TrlErr *err)
{
	JsonValue *root = NULL;
	int rc = json_load_file(path, &root, err);
	if (rc)
		return rc;
	rc = config_from_json(mc, root, path, err);
	json_free(root);
	return rc;
}

int model_config_parse_json(ModelConfig *mc, const char *text, size_t len,
                            const char *origin, TrlErr *err)
{
	JsonValue *root = NULL;
	JsonError je;
	if (json_parse(text, len, &root, &je) != 0)
		return trl_errf(err, TRL_EFORMAT, "%s:%d:%d: %s", origin, je.line,
		                je.column, je.msg);
	int rc = config_from_json(mc, root, origin, err);
	json_free(root);
	return rc;
}

/* ---- weights --------------------------------------------------------------- */

/* The tensor of parameter name in f, also under the name a base-model save
 * uses (no "model." / "transformer." prefix, as in the gpt2 checkpoints on the
 * Hub). */
static const StTensor *find_param(const StFile *f, const char *name)
{
	const StTensor *t = st_find(f, name);
	if (t)
		return t;
	if (strncmp(name, "model.", 6) == 0)
		return st_find(f, name + 6);
	if (strncmp(name, "transformer.", 12) == 0)
		return st_find(f, name + 12);
	return NULL;
}

static void shape_str(char *buf, size_t cap, const int64_t *shape, int ndim)
{
	int n = snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && n < (int)cap; i++)
		n += snprintf(buf + n, cap - (size_t)n, "%s%lld", i ? ", " : "",
		              (long long)shape[i]);
	if (n < (int)cap)
		snprintf(buf + n, cap - (size_t)n, "]");
}

/* Copies every not yet loaded parameter found in the file at path into the
 * slab, converting to float32, and marks it in loaded[]. */
static int load_file(Model *m, const char *path, char *loaded, TrlErr *err)
{
	StFile f = {0};
	int rc = st_open(&f, path, err);
	if (rc)
		return rc;
	for (int i = 0; i < m->table.n && !rc; i++) {
		const ParamInfo *p = &m->table.p[i];
		if (loaded[i])
			continue;
		const StTensor *t = find_param(&f, p->name);
		if (!t)
			continue;
		int64_t want[3];
		int nd = params_file_shape(p, want);
		int shape_ok = t->ndim == nd;
		for (int d = 0; d < nd && shape_ok; d++)
			shape_ok = t->shape[d] == want[d];
		if (!shape_ok) {
			char got[96], exp[64];
			shape_str(got, sizeof got, t->shape, t->ndim);
			shape_str(exp, sizeof exp, want, nd);
			rc = trl_errf(err, TRL_EFORMAT,
			              "%s: tensor '%s' has shape %s, but config.json "
			              "implies %s",
			              path, t->name, got, exp);
			break;
		}
		rc = st_tensor_to_f32(t, m->params + p->offset, p->numel, err);
		st_release(&f, t);
		if (rc) {
			char msg[sizeof err->msg];
			snprintf(msg, sizeof msg, "%s", err->msg);
			rc = trl_errf(err, rc, "%s: %s", path, msg);
		}
		loaded[i] = 1;
	}
	st_close(&f);
	return rc;
}

/* The distinct shard file names of an index's weight_map. *files is one
 * allocation of pointers into root; free it, not the strings. */
static int index_files(const JsonValue *root, const char *path, const char ***files,
                       int *n, TrlErr *err)
{
	const JsonValue *map = json_get(root, "weight_map");
	*files = NULL;
	*n = 0;
	if (!map || map->type != JSON_OBJECT)
		return trl_errf(err, TRL_EFORMAT, "%s: 'weight_map' object is missing",
		                path);
	const char **list = calloc(map->len + 1, sizeof *list);
	if (!list)
		return trl_errf(err, TRL_ENOMEM, "out of memory reading %s", path);
	int k = 0;
	for (size_t i = 0; i < map->len; i++) {
		const char *file = json_str(&map->members[i].value);
		if (!file || !*file || strchr(file, '/') || strcmp(file, "..") == 0) {
			free(list);
			return trl_errf(err, TRL_EFORMAT,
			                "%s: weight_map['%s'] must be a file name in the "
			                "same folder",
			                path, map->members[i].key);
		}
		int seen = 0;
		for (int j = 0; j < k && !seen; j++)
			seen = strcmp(list[j], file) == 0;
		if (!seen)
			list[k++] = file;
	}
	*files = list;
	*n = k;
	return TRL_OK;
}

int model_load_dir(Model *m, const char *dir, TrlErr *err)
{
	return model_load_dir_head(m, dir, -1, 0, NULL, err);
}

int model_load_dir_head(Model *m, const char *dir, int num_labels, uint64_t seed,
                        int *head_initialized, TrlErr *err)
{
	return model_load_dir_flags(m, dir, num_labels, seed, 0, head_initialized, err);
}

int model_load_dir_flags(Model *m, const char *dir, int num_labels, uint64_t seed,
                         unsigned flags, int *head_initialized, TrlErr *err)
{
	char path[PATH_CAP], where[PATH_CAP];
	ModelConfig mc;
	JsonValue *index = NULL;
	const char **files = NULL;
	char *loaded = NULL;
	int nfiles = 0;
	/* A PEFT adapter folder: its base with the adapters merged in. */
	if (lora_is_adapter_dir(dir))
		return lora_load_merged(m, dir, NULL, num_labels, seed, flags,
		                        head_initialized, err);
	snprintf(path, sizeof path, "%s/config.json", dir);
	int rc = model_config_load_json(&mc, path, err);
	if (rc)
		return rc;
	if (num_labels >= 0)
		mc.num_labels = num_labels;
	if (head_initialized)
		*head_initialized = 0;
	rc = model_init_flags(m, &mc, flags & ~(unsigned)MODEL_NO_PARAMS, err);
	if (rc)
		return rc;
	loaded = calloc((size_t)m->table.n, 1);
	if (!loaded) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory loading %s", dir);
		goto fail;
	}
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (file_exists(path)) {
		snprintf(where, sizeof where, "%s", path);
		rc = load_file(m, path, loaded, err);
	} else {
		snprintf(where, sizeof where, "%s/model.safetensors.index.json", dir);
		if (!file_exists(where)) {
			snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
			rc = trl_errf(err, TRL_EIO,
			              "%s has neither model.safetensors nor "
			              "model.safetensors.index.json%s",
			              dir,
			              file_exists(path) ? " (pytorch_model.bin is not "
			                                  "supported: convert it to "
			                                  "safetensors)"
			                                : "");
			goto fail;
		}
		rc = json_load_file(where, &index, err);
		if (!rc)
			rc = index_files(index, where, &files, &nfiles, err);
		for (int i = 0; i < nfiles && !rc; i++) {
			snprintf(path, sizeof path, "%s/%s", dir, files[i]);
			rc = load_file(m, path, loaded, err);
		}
	}
	if (rc)
		goto fail;
	for (int i = 0; i < m->table.n; i++) {
		const ParamInfo *p = &m->table.p[i];
		if (!loaded[i] && mc.num_labels > 0 &&
		    strcmp(p->name, "score.weight") == 0) {
			/* A causal LM becoming a classifier: a new head, drawn as
			 * transformers draws it (N(0, initializer_range)). */
			model_init_weights_range(m, seed, m->params + p->offset,
			                         p->offset, p->offset + p->numel);
			loaded[i] = 1;
			if (head_initialized)
				*head_initialized = 1;
		}
		if (!loaded[i]) {
			rc = trl_errf(
			    err, TRL_EFORMAT,
			    "%s: tensor '%s' is missing (config.json describes a "
			    "%s model that has it)",
			    where, m->table.p[i].name,
			    model_hf_type_name(m->cfg.model_type));
			goto fail;
		}
	}
	free(files);
	free(loaded);
	json_free(index);
	return TRL_OK;
fail:
	free(files);
	free(loaded);
	json_free(index);
	model_free(m);
	return rc;
}
