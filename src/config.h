/* config.h - the run configuration: one schema table (key, type, default, range,
 * help) drives YAML parsing, command-line overrides, validation, --help,
 * `trl-hpc validate` and the README's configuration reference.
 *
 * Keys are TRL's names wherever TRL has one. The model shape lives in a nested
 * `model:` mapping whose keys are Hugging Face config.json names; in the schema
 * they are written with a dot (`model.hidden_size`), and so on the command line
 * (`--model.hidden_size 256`).
 *
 * Usage:
 *     Config c; config_defaults(&c);
 *     if (config_load_yaml(&c, "input.yaml", &err)) ...;      // file:line:col errors
 *     if (config_set(&c, "learning_rate", "1e-3", "command line", &err)) ...;
 *     if (config_finish(&c, &err)) ...;                       // cross-key checks
 * Config holds no heap memory: strings are fixed arrays.
 */
#ifndef TRL_CONFIG_H
#define TRL_CONFIG_H

#include <stdio.h>

#include "model_config.h"
#include "trl.h"

#define TRL_PATH_MAX 1024

typedef enum {
	TRL_METHOD_SFT = 0,
	TRL_METHOD_REWARD,
	TRL_METHOD_DPO,
	TRL_METHOD_KTO,
	TRL_METHOD_ORPO,
	TRL_METHOD_CPO,
	TRL_METHOD_BCO,
	TRL_METHOD_GRPO,
	TRL_METHOD_RLOO,
	TRL_METHOD_PPO
} TrlMethod;
/* The online methods: they sample completions during training. */
#define TRL_METHOD_IS_ONLINE(m) ((m) >= TRL_METHOD_GRPO)
/* f_divergence_type: the same values as losses.h's TrlFDivergence. */
typedef enum {
	TRL_FDIV_TYPE_REVERSE_KL = 0,
	TRL_FDIV_TYPE_FORWARD_KL,
	TRL_FDIV_TYPE_JS,
	TRL_FDIV_TYPE_ALPHA
} TrlFDivType;
typedef enum { TRL_SAMPLING_RANDOM = 0, TRL_SAMPLING_SEQUENTIAL } TrlSampling;
typedef enum {
	TRL_SCHED_CONSTANT = 0,
	TRL_SCHED_CONSTANT_WITH_WARMUP,
	TRL_SCHED_LINEAR,
	TRL_SCHED_COSINE
} TrlScheduler;
typedef enum { TRL_TRUNC_KEEP_START = 0, TRL_TRUNC_KEEP_END } TrlTruncation;
typedef enum { TRL_SAVE_NO = 0, TRL_SAVE_STEPS, TRL_SAVE_EPOCH } TrlSaveStrategy;
/* dataset_format: the same values as dataset.h's TrlDataFormat. */
typedef enum {
	TRL_DATASET_FORMAT_AUTO = 0,
	TRL_DATASET_FORMAT_LANGUAGE_MODELING,
	TRL_DATASET_FORMAT_PROMPT_ONLY,
	TRL_DATASET_FORMAT_PROMPT_COMPLETION,
	TRL_DATASET_FORMAT_PREFERENCE,
	TRL_DATASET_FORMAT_UNPAIRED_PREFERENCE
} TrlDatasetFormat;

typedef struct Config {
	TrlMethod method;                      /* method: sft, reward, dpo, ... */
	char model_name_or_path[TRL_PATH_MAX]; /* "" = new model from the model: block */
	char output_dir[TRL_PATH_MAX];
	char dataset_name[TRL_PATH_MAX]; /* a .jsonl file, or a folder of <split>.jsonl */
	char dataset_train_split[64];    /* "train" */
	char dataset_test_split[64];     /* "test" */
	char dataset_text_field[64];     /* "text" */
	char dataset_cache_dir[TRL_PATH_MAX]; /* "" default location, "none" off */
	TrlDatasetFormat dataset_format;      /* auto = detect from the first row */
	char chat_template[256];              /* "" = the model's, else chatml */
	char eos_token[64];                   /* "" = the tokenizer's EOS */
	int assistant_only_loss;
	int per_device_train_batch_size;
	int per_device_eval_batch_size;
	int gradient_accumulation_steps;
	double learning_rate;
	TrlScheduler lr_scheduler_type;
	double warmup_ratio;
	int warmup_steps;
	double weight_decay;
	int weight_decay_embeddings; /* also decay embeddings (norms and biases never) */
	double adam_beta1, adam_beta2, adam_epsilon;
	double max_grad_norm; /* 0 = no clipping */
	double num_train_epochs;
	int max_steps;    /* -1 = from num_train_epochs */
	int save_dtype;   /* 0 float32, 1 bfloat16: the exported model.safetensors */
	int export_steps; /* Hugging Face folder checkpoint-<step> every N steps; 0: off
	                   */
	TrlSaveStrategy save_strategy;
	int save_steps;
	int save_total_limit; /* 0 = keep every checkpoint */
	int save_only_model;
	char resume_from_checkpoint[TRL_PATH_MAX]; /* "", "latest", a file or folder */
	int logging_steps;
	int eval_steps;          /* 0 = only before and after training */
	int eval_max_new_tokens; /* greedy answers for exact-match accuracy; 0 = off */
	int eval_max_samples;    /* 0 = the whole test split */
	long seed;
	int max_length;
	TrlTruncation truncation_mode;
	int packing;
	int completion_only_loss; /* -1 = None (on for prompt-completion data) */
	int skip_invalid_rows; /* skip and count malformed JSONL rows instead of failing
	                        */
	int threads_per_rank;  /* 0 = cores on the node / ranks on the node */
	int disable_tqdm;      /* no console progress line */
	int zero_stage;        /* 0-3 */
	long stage3_param_persistence_threshold; /* units below stay whole */
	int overlap_comm; /* non-blocking collectives overlap compute */
	TrlSampling train_sampling_strategy; /* random: shuffled each epoch */
	/* Preference and reward methods (TRL's names and defaults). */
	double beta;
	char loss_type[256];    /* "" = the method's default; a comma-separated list */
	char loss_weights[256]; /* "" = 1 for each loss_type; comma-separated */
	double label_smoothing;
	int use_weighting;
	double ld_alpha; /* 1 = TRL's None (the whole completion counts) */
	TrlFDivType f_divergence_type;
	double f_alpha_divergence_coef;
	double discopop_tau;
	int precompute_ref_log_probs;
	char ref_model_name_or_path[TRL_PATH_MAX]; /* "" = a frozen copy of the start */
	int sync_ref_model;
	double ref_model_mixup_alpha;
	int ref_model_sync_steps;
	double center_rewards_coefficient; /* 0 = TRL's None */
	double desirable_weight, undesirable_weight;
	double cpo_alpha, simpo_gamma, alpha;
	/* Online methods (grpo, rloo, ppo): rank layout and rollouts. */
	int generation_ranks; /* the last K ranks only generate; 0 = colocate */
	int max_staleness;    /* optimizer steps a rollout's weights may lag */
	int num_generations;
	int max_prompt_length;     /* prompts keep their last tokens */
	int max_completion_length; /* ppo: response_length */
	double temperature, top_p, min_p, repetition_penalty;
	int top_k;
	int num_iterations;
	double epsilon, epsilon_high, delta; /* 0 = TRL's None for the last two */
	int importance_sampling_level;       /* 0 token, 1 sequence (GSPO) */
	int scale_rewards;                   /* rl_losses.h's TrlScaleRewards */
	int mask_truncated_completions;
	double top_entropy_quantile;
	char reward_funcs[256];   /* comma-separated built-in names */
	char reward_weights[256]; /* comma-separated, one per reward */
	char reward_model[TRL_PATH_MAX];
	char reward_command[TRL_PATH_MAX];
	double reward_timeout;
	char format_pattern[512]; /* "" = the think_format preset */
	char solution_column[64]; /* "" = solution, else answer */
	int soft_punish_cache;    /* 0 = max_completion_length / 4 */
	int vllm_importance_sampling_correction;
	int vllm_importance_sampling_mode; /* rl_losses.h's TrlIsMode */
	double vllm_importance_sampling_clip_max, vllm_importance_sampling_clip_min;
	int normalize_advantages;
	char reward_clip_range[64]; /* "" or "lo,hi" */
	int num_ppo_epochs, num_mini_batches;
	double kl_coef;
	int kl_estimator; /* 0 k1, 1 k3 */
	double cliprange, cliprange_value, vf_coef, gamma, lam;
	int whiten_rewards;
	double missing_eos_penalty;          /* 0 = TRL's None */
	char value_model_path[TRL_PATH_MAX]; /* "" = reward_model, else the policy */
	int log_completions;
	/* LoRA (TRL's ModelConfig) */
	int use_peft, lora_r, use_rslora, disable_dropout;
	int bf16, fp16; /* mixed precision (gemm.h); fp16 is refused */
	double lora_alpha, lora_dropout;
	char lora_target_modules[512], lora_modules_to_save[512];
	char base_model_name_or_path[TRL_PATH_MAX];
	ModelConfig model;
	char model_layer_types[8192]; /* lfm2: comma-separated conv / full_attention */
	char source[TRL_PATH_MAX];    /* the YAML file the config came from, or "" */
	unsigned char given[200];     /* per schema key: set by the YAML or a flag */
} Config;

/* Every field at its schema default. */
void config_defaults(Config *c);

/* Reads a YAML mapping; unknown keys, wrong types and out-of-range values are
 * errors that name file:line:col, the key and what is allowed (with a "did you
 * mean" suggestion for unknown keys). Returns 0 or a negative code. */
int config_load_yaml(Config *c, const char *path, TrlErr *err);

/* Sets one key from its text form (as on the command line); `origin` names
 * where the value came from for error messages ("command line"). */
int config_set(Config *c, const char *key, const char *value, const char *origin,
               TrlErr *err);

/* Parses `--key value` / `--key=value` pairs in argv[first..argc). */
int config_apply_args(Config *c, int argc, char **argv, int first, TrlErr *err);

/* Checks relations between keys and fills derived values: TRL's per-method
 * defaults (learning_rate, train_sampling_strategy, loss_type) for keys
 * neither the YAML nor a flag gave; call once at the end. */
int config_finish(Config *c, TrlErr *err);

/* The resolved config as YAML that config_load_yaml reads back unchanged. */
void config_write_yaml(const Config *c, FILE *f);

/* `trl-hpc --help`: every key with type, default, range and help. */
void config_print_help(FILE *f);

/* The README's configuration reference as a Markdown table. */
void config_print_markdown(FILE *f);

#endif
