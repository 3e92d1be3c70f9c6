/* validate.c - `trl-hpc validate`: the resolved config and, for each ZeRO
 * stage, the memory and traffic of a rank. */
#include "train.h"

#include <string.h>

#include "model_io.h"
#include "params.h"
#include "trainer.h"
#include "zero.h"

static void print_bytes(FILE *out, double b)
{
	if (b >= 1024.0 * 1024.0 * 1024.0)
		fprintf(out, "%9.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
	else
		fprintf(out, "%9.1f MiB", b / (1024.0 * 1024.0));
}

int trl_validate(const Config *cfg, const Comm *comm, const ValidatePlan *plan, FILE *out,
                 TrlErr *err)
{
	ModelConfig mc = cfg->model;
	int rc = TRL_OK;
	/* LoRA: the base's shape (an adapter folder names its base). */
	LoraSpec spec;
	char base[TRL_PATH_MAX];
	int from_adapter = 0;
	int peft = cfg->use_peft || (cfg->model_name_or_path[0] &&
	                             lora_is_adapter_dir(cfg->model_name_or_path));
	snprintf(base, sizeof base, "%s", cfg->model_name_or_path);
	if (peft)
		rc = train_lora_spec(cfg, &spec, base, sizeof base, &from_adapter, err);
	if (!rc && base[0]) {
		char path[TRL_PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/config.json", base);
		rc = model_config_load_json(&mc, path, err);
	}
	/* A reward model is a one-label classifier; the others causal LMs. */
	const Method *me = method_of(cfg->method);
	mc.num_labels = me->classifier ? 1 : 0;
	if (!rc)
		rc = model_config_check(&mc, err);
	ParamTable t;
	memset(&t, 0, sizeof t);
	if (!rc)
		rc = params_build(&t, &mc, err);
	/* The adapters' table, from a weightless model of the base's shape. */
	Model shape;
	Lora lo;
	memset(&shape, 0, sizeof shape);
	memset(&lo, 0, sizeof lo);
	char unmatched[256] = "";
	unsigned none = MODEL_NO_PARAMS | MODEL_NO_GRADS;
	if (!rc && peft)
		rc = model_init_flags(&shape, &mc, none | MODEL_FROZEN, err);
	if (!rc && peft)
		rc = lora_init(&lo, &shape, &spec, none, 0, unmatched, sizeof unmatched,
		               err);
	if ((rc = comm_agree(comm, rc, err)) || comm->rank != 0) {
		lora_free(&lo);
		model_free(&shape);
		params_free(&t);
		return rc;
	}
	config_write_yaml(cfg, out);
	int world = plan && plan->ranks > 0 ? plan->ranks : comm->size;
	/* Online methods: the generation ranks hold no ZeRO state. */
	int K = TRL_METHOD_IS_ONLINE(cfg->method) ? cfg->generation_ranks : 0;
	int N = world - K > 0 ? world - K : 1;
	int T = TRL_METHOD_IS_ONLINE(cfg->method)
	            ? cfg->max_prompt_length + cfg->max_completion_length
	            : cfg->max_length;
	double limit = plan ? plan->mem_per_rank : 0.0;
	int B = cfg->per_device_train_batch_size;
	int B2 =
	    cfg->per_device_eval_batch_size > B ? cfg->per_device_eval_batch_size : B;
	/* Pair methods put chosen and rejected of each pair in one batch. */
	B2 *= me->rows_per_example;
	double act = (double)model_activation_bytes(&mc, B2, T);
	/* dpo, kto and bco hold a reference model (its weights, sharded like
	 * the policy's under stage 3) unless its log-probs are precomputed. */
	int ref = (me->uses_ref || cfg->method == TRL_METHOD_PPO ||
	           (TRL_METHOD_IS_ONLINE(cfg->method) && cfg->beta > 0)) &&
	          !cfg->precompute_ref_log_probs;
	/* Under LoRA the reference is the base with the adapters off. */
	if (peft && !cfg->ref_model_name_or_path[0])
		ref = 0;
	int GA = cfg->gradient_accumulation_steps;
	fprintf(out, "# model: %s, %zu parameters (%zu without embeddings)\n",
	        model_arch_name(mc.arch), model_config_num_params(&mc),
	        model_config_num_nonembedding_params(&mc));
	if (peft) {
		char text[1024];
		lora_describe(&lo, &shape, text, sizeof text);
		for (char *line = text; line;) {
			char *nl = strchr(line, '\n');
			fprintf(out, "# %.*s\n",
			        nl ? (int)(nl - line) : (int)strlen(line), line);
			line = nl ? nl + 1 : NULL;
		}
		if (unmatched[0])
			fprintf(out, "# lora_target_modules: %s match%s no module\n",
			        unmatched, strchr(unmatched, ',') ? "" : "es");
	}
	if (K > 0) {
		/* A generator: the full weights, the KV cache of one chunk of
		 * rows and its sampling scratch, and the incoming message. */
		double w = 4.0 * (double)t.total;
		double kv = 2.0 * 4.0 * mc.num_hidden_layers * (double)B * T *
		            (mc.hidden_size / mc.num_attention_heads) *
		            (mc.num_key_value_heads > 0 ? mc.num_key_value_heads
		                                        : mc.num_attention_heads);
		fprintf(
		    out,
		    "# generation ranks: %d of %d (world ranks %d-%d), each %.1f MiB: "
		    "weights %.1f MiB, the incoming weight message %.1f MiB, KV cache "
		    "%.1f MiB for %d rows of %d tokens\n",
		    K, world, world - K, world - 1, (2 * w + kv) / 1048576.0,
		    w / 1048576.0, w / 1048576.0, kv / 1048576.0, B, T);
		if (world - K < 1)
			fprintf(out,
			        "# generation_ranks %d leaves no trainer on %d ranks\n",
			        K, world);
	}
	fprintf(out,
	        "# ZeRO plan for %d %s%s, fp32 AdamW, per rank (the largest shard); "
	        "activations for B=%d, T=%d; %d accumulation step%s\n",
	        N, K > 0 ? "trainer" : "rank", N > 1 ? "s" : "", B2, T, GA,
	        GA > 1 ? "s" : "");
	fprintf(out,
	        "# stage   parameters    gradients    optimizer      buffers  "
	        "activations%s%s        total  sent per step\n",
	        peft ? "  frozen base" : "", ref ? "    reference" : "");
	int fits = -1;
	for (int st = 0; st <= 3; st++) {
		ZeroMem zm, bm;
		double sent, bsent;
		/* LoRA: the trained state is the adapters'; the frozen base is
		 * whole under stages 0-2, sharded with gather buffers under 3. */
		zero_estimate(peft ? &lo.ad.table : &t, st, N,
		              cfg->stage3_param_persistence_threshold, GA, &zm, &sent);
		memset(&bm, 0, sizeof bm);
		bsent = 0.0;
		if (peft && st == 3)
			zero_estimate_frozen(&t, N,
			                     cfg->stage3_param_persistence_threshold, GA,
			                     &bm, &bsent);
		double frozen = !peft    ? 0.0
		                : st < 3 ? 4.0 * (double)t.total
		                         : bm.params + bm.work;
		if (peft && st == 3)
			sent += bsent; /* the base's gathers too */
		/* The reference: whole weights under stages 0-2; under stage 3
		 * its shards and gather buffers (no gradients, no optimizer). It
		 * runs in the policy's activation memory. */
		double refb = !ref     ? 0.0
		              : st < 3 ? 4.0 * (double)t.total
		                       : zm.params + zm.work_params;
		double total =
		    zm.params + zm.grads + zm.optim + zm.work + act + refb + frozen;
		fprintf(out, "# %5d", st);
		print_bytes(out, zm.params);
		print_bytes(out, zm.grads);
		print_bytes(out, zm.optim);
		print_bytes(out, zm.work);
		print_bytes(out, act);
		if (peft)
			print_bytes(out, frozen);
		if (ref)
			print_bytes(out, refb);
		print_bytes(out, total);
		print_bytes(out, sent);
		int ok = limit > 0 && total <= limit;
		fprintf(out, "%s%s\n", st == cfg->zero_stage ? "  <- zero_stage" : "",
		        ok ? "  fits" : "");
		if (ok && fits < 0)
			fits = st;
	}
	if (cfg->method == TRL_METHOD_PPO)
		fprintf(
		    out,
		    "# ppo also trains a value model (value_model_path, else "
		    "reward_model): "
		    "its parameters, gradients and optimizer state add what the columns "
		    "above show for a model of its size, and the reward model its "
		    "weights (sharded under stage 3)\n");
	else if (TRL_METHOD_IS_ONLINE(cfg->method) && cfg->reward_model[0])
		fprintf(out,
		        "# reward_model adds its weights on every trainer (sharded under "
		        "stage 3)\n");
	if (ref)
		fprintf(out, "# the reference column is the frozen reference model; with "
		             "precompute_ref_log_probs it is replaced by 16 bytes per "
		             "example (its log-probs, computed before training)\n");
	else if (cfg->precompute_ref_log_probs)
		fprintf(out,
		        "# precompute_ref_log_probs: the reference's log-probs take 16 "
		        "bytes per example; no reference model is held\n");
	if (limit > 0 && fits >= 0) {
		fprintf(out,
		        "# with %.2f GiB per rank, zero_stage %d is the lowest stage "
		        "that fits (the least sharding, the fewest bytes sent)\n",
		        limit / (1024.0 * 1024.0 * 1024.0), fits);
	} else if (limit > 0) {
		int need = 0;
		for (int n = N * 2; n <= (1 << 20) && !need; n *= 2) {
			ZeroMem zm;
			double sent;
			zero_estimate(&t, 3, n, cfg->stage3_param_persistence_threshold,
			              GA, &zm, &sent);
			if (zm.params + zm.grads + zm.optim + zm.work + act <= limit)
				need = n;
		}
		fprintf(out, "# with %.2f GiB per rank no stage fits on %d ranks",
		        limit / (1024.0 * 1024.0 * 1024.0), N);
		if (need)
			fprintf(out, "; zero_stage 3 fits on %d ranks", need);
		fprintf(out, "; a smaller per_device_train_batch_size or max_length "
		             "shrinks the activations\n");
	}
	lora_free(&lo);
	model_free(&shape);
	params_free(&t);
	return TRL_OK;
}
