/* config.c - one schema table drives defaults, YAML and CLI parsing, --help and docs. */
#include "config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

typedef enum {
	K_INT,     /* int */
	K_LONG,    /* long */
	K_DOUBLE,  /* double */
	K_FLOAT,   /* float (the ModelConfig fields) */
	K_BOOL,    /* int: 0 or 1 */
	K_TRIBOOL, /* int: -1 (None), 0 or 1 */
	K_STRING,  /* char[size] */
	K_ENUM     /* int: index into choices */
} KeyType;

/* Which bounds of [lo, hi] apply, and whether they are strict. */
enum { LO = 1, HI = 2, LO_OPEN = 4, HI_OPEN = 8 };

typedef struct Key {
	const char *name; /* model keys are "model.<config.json name>" */
	KeyType type;
	size_t off;
	size_t size;
	const char *def; /* parsed by the same code as user input */
	double lo, hi;
	int bounds;
	const char *const *choices; /* K_ENUM: NULL-terminated, index = stored value */
	const char *group;          /* heading printed before this key in --help */
	const char *help;
} Key;

/* Every enum field is written through an int pointer. */
_Static_assert(sizeof(TrlMethod) == sizeof(int), "TrlMethod is int-sized");
_Static_assert(sizeof(TrlScheduler) == sizeof(int), "TrlScheduler is int-sized");
_Static_assert(sizeof(TrlTruncation) == sizeof(int), "TrlTruncation is int-sized");
_Static_assert(sizeof(TrlArch) == sizeof(int), "TrlArch is int-sized");
_Static_assert(sizeof(TrlDatasetFormat) == sizeof(int), "TrlDatasetFormat is int-sized");
_Static_assert(TRL_DATASET_FORMAT_AUTO == 0 &&
                   TRL_DATASET_FORMAT_PROMPT_COMPLETION == 3 &&
                   TRL_DATASET_FORMAT_UNPAIRED_PREFERENCE == 5,
               "dataset_format choices follow TrlDatasetFormat");
_Static_assert(TRL_SCHED_CONSTANT == 0 && TRL_SCHED_CONSTANT_WITH_WARMUP == 1 &&
                   TRL_SCHED_LINEAR == 2 && TRL_SCHED_COSINE == 3,
               "scheduler choices follow TrlScheduler");
_Static_assert(sizeof(TrlSaveStrategy) == sizeof(int), "TrlSaveStrategy is int-sized");
_Static_assert(TRL_SAVE_NO == 0 && TRL_SAVE_STEPS == 1 && TRL_SAVE_EPOCH == 2,
               "save_strategy choices follow TrlSaveStrategy");
_Static_assert(TRL_TRUNC_KEEP_START == 0 && TRL_TRUNC_KEEP_END == 1,
               "truncation choices follow TrlTruncation");
_Static_assert(TRL_ARCH_LLAMA == 0 && TRL_ARCH_GPT2 == 1, "arch choices follow TrlArch");
_Static_assert(TRL_METHOD_SFT == 0 && TRL_METHOD_REWARD == 1 && TRL_METHOD_DPO == 2 &&
                   TRL_METHOD_KTO == 3 && TRL_METHOD_ORPO == 4 && TRL_METHOD_CPO == 5 &&
                   TRL_METHOD_BCO == 6 && TRL_METHOD_GRPO == 7 && TRL_METHOD_RLOO == 8 &&
                   TRL_METHOD_PPO == 9,
               "method choices follow TrlMethod");
_Static_assert(sizeof(TrlFDivType) == sizeof(int) && sizeof(TrlSampling) == sizeof(int),
               "enum keys are int-sized");

static const char *const method_choices[] = {
    "sft", "reward", "dpo", "kto", "orpo", "cpo", "bco", "grpo", "rloo", "ppo", NULL};
static const char *const is_level_choices[] = {"token", "sequence", NULL};
static const char *const scale_rewards_choices[] = {"group", "batch", "none", NULL};
static const char *const is_mode_choices[] = {"token_truncate", "token_mask",
                                              "sequence_truncate", "sequence_mask", NULL};
static const char *const kl_estimator_choices[] = {"k1", "k3", NULL};
static const char *const fdiv_choices[] = {"reverse_kl", "forward_kl", "js_divergence",
                                           "alpha_divergence", NULL};
static const char *const sampling_choices[] = {"random", "sequential", NULL};
static const char *const sched_choices[] = {"constant", "constant_with_warmup", "linear",
                                            "cosine", NULL};
static const char *const trunc_choices[] = {"keep_start", "keep_end", NULL};
static const char *const save_dtype_choices[] = {"float32", "bfloat16", NULL};
static const char *const save_strategy_choices[] = {"no", "steps", "epoch", NULL};
static const char *const arch_choices[] = {"llama", "gpt2", "lfm2", NULL};
static const char *const dataset_format_choices[] = {
    "auto",       "language_modeling",   "prompt_only", "prompt_completion",
    "preference", "unpaired_preference", NULL};

#define F(field) offsetof(Config, field), sizeof(((Config *)0)->field)
#define GE(x) .lo = (x), .bounds = LO
#define GT(x) .lo = (x), .bounds = LO | LO_OPEN
#define IN(a, b) .lo = (a), .hi = (b), .bounds = LO | HI
#define IN_LO(a, b) .lo = (a), .hi = (b), .bounds = LO | HI | LO_OPEN
#define IN_HO(a, b) .lo = (a), .hi = (b), .bounds = LO | HI | HI_OPEN

static const Key keys[] = {
    {"method", K_ENUM, F(method), "sft", .choices = method_choices, .group = "Run",
     .help = "Post-training method, as TRL's trainers: sft (SFTTrainer), reward "
             "(RewardTrainer), dpo (DPOTrainer), kto (KTOTrainer), orpo "
             "(ORPOTrainer), cpo (CPOTrainer: CPO, SimPO, AlphaPO), bco "
             "(BCOTrainer, without UDM)."},
    {"model_name_or_path", K_STRING, F(model_name_or_path), "",
     .help = "Folder of a pretrained model to fine-tune; empty trains a new model "
             "shaped by the model keys."},
    {"output_dir", K_STRING, F(output_dir), "output",
     .help = "Folder for checkpoints, logs and the final model."},
    {"seed", K_LONG, F(seed), "42",
     .help = "Random seed for weight initialization and data shuffling; the same seed "
             "gives the same run."},
    {"threads_per_rank", K_INT, F(threads_per_rank), "0", GE(0),
     .help = "OpenMP threads per MPI rank; 0 = the node's cores divided by the ranks "
             "on the node."},
    {"disable_tqdm", K_BOOL, F(disable_tqdm), "false",
     .help = "Turn off the console progress line."},

    {"zero_stage", K_INT, F(zero_stage), "0", IN(0, 3), .group = "Distributed",
     .help = "ZeRO sharding over the ranks: 0 replicates everything (DDP), 1 shards "
             "the AdamW moments, 2 also the gradients, 3 also the parameters."},
    {"stage3_param_persistence_threshold", K_LONG, F(stage3_param_persistence_threshold),
     "100000", GE(0),
     .help = "Stage 3: a unit (the embeddings, one layer, the final norm) with fewer "
             "parameters than this stays whole on every rank instead of being "
             "gathered before each use."},
    {"overlap_comm", K_BOOL, F(overlap_comm), "true",
     .help = "Run gradient reductions and parameter gathers while the backward and "
             "forward compute; false waits for each at once (to measure the cost)."},

    {"dataset_name", K_STRING, F(dataset_name), "", .group = "Data",
     .help = "A .jsonl file, or a folder with one <split>.jsonl file per split "
             "(train.jsonl, test.jsonl)."},
    {"dataset_train_split", K_STRING, F(dataset_train_split), "train",
     .help = "Split to train on (the file <dataset_name>/<split>.jsonl)."},
    {"dataset_test_split", K_STRING, F(dataset_test_split), "test",
     .help = "Split to evaluate on (the file <dataset_name>/<split>.jsonl)."},
    {"dataset_text_field", K_STRING, F(dataset_text_field), "text",
     .help = "JSON field holding the text of language-modeling rows."},
    {"dataset_cache_dir", K_STRING, F(dataset_cache_dir), "",
     .help = "Folder for tokenized datasets, keyed by file, tokenizer and settings so "
             "a rerun skips tokenization; empty: $XDG_CACHE_HOME/trl-hpc (or "
             "~/.cache/trl-hpc); none: no cache."},
    {"dataset_format", K_ENUM, F(dataset_format), "auto",
     .choices = dataset_format_choices,
     .help = "Dataset type; auto detects it from the first row's columns, another "
             "value insists on it (its columns must be there)."},
    {"chat_template", K_STRING, F(chat_template), "",
     .help = "Chat template for conversational data, by name (chatml, qwen2.5, "
             "llama3, ...); empty = the model's tokenizer_config.json template, or "
             "chatml."},
    {"eos_token", K_STRING, F(eos_token), "",
     .help = "Token appended to completions and used as the template's eos_token; "
             "empty = the tokenizer's own EOS."},
    {"assistant_only_loss", K_BOOL, F(assistant_only_loss), "false",
     .help = "Compute the loss on the assistant turns of conversational data only "
             "(their content and end-of-turn token)."},
    {"max_length", K_INT, F(max_length), "1024", GE(2),
     .help = "Longest tokenized sequence; longer examples are truncated (see "
             "truncation_mode)."},
    {"truncation_mode", K_ENUM, F(truncation_mode), "keep_start",
     .choices = trunc_choices,
     .help = "Which part of a too-long example to keep: its start or its end."},
    {"packing", K_BOOL, F(packing), "false",
     .help = "Concatenate examples into full max_length rows instead of padding each "
             "one."},
    {"completion_only_loss", K_TRIBOOL, F(completion_only_loss), "null",
     .help = "Compute the loss on completion tokens only; null = yes for "
             "prompt-completion data, no otherwise."},
    {"skip_invalid_rows", K_BOOL, F(skip_invalid_rows), "false",
     .help = "Skip and count malformed JSONL rows instead of stopping at the first "
             "one."},

    {"per_device_train_batch_size", K_INT, F(per_device_train_batch_size), "8", GE(1),
     .group = "Optimization",
     .help = "Sequences per rank per micro-step; the global batch is this x ranks x "
             "gradient_accumulation_steps."},
    {"gradient_accumulation_steps", K_INT, F(gradient_accumulation_steps), "1", GE(1),
     .help = "Micro-steps whose gradients are summed before each optimizer step."},
    {"learning_rate", K_DOUBLE, F(learning_rate), "2e-5", GE(0),
     .help = "Peak learning rate of AdamW."},
    {"lr_scheduler_type", K_ENUM, F(lr_scheduler_type), "linear",
     .choices = sched_choices,
     .help = "Learning-rate schedule after warmup: constant, or linear / cosine decay "
             "to 0."},
    {"warmup_ratio", K_DOUBLE, F(warmup_ratio), "0", IN(0, 1),
     .help = "Fraction of the training steps spent ramping the learning rate up from "
             "0."},
    {"warmup_steps", K_INT, F(warmup_steps), "0", GE(0),
     .help = "Warmup steps; when nonzero it overrides warmup_ratio."},
    {"weight_decay", K_DOUBLE, F(weight_decay), "0", GE(0),
     .help = "AdamW decoupled weight decay; never applied to norms and biases."},
    {"weight_decay_embeddings", K_BOOL, F(weight_decay_embeddings), "false",
     .help = "Also apply weight_decay to the embedding matrices."},
    {"adam_beta1", K_DOUBLE, F(adam_beta1), "0.9", IN_HO(0, 1),
     .help = "AdamW decay rate of the first-moment (mean) estimate."},
    {"adam_beta2", K_DOUBLE, F(adam_beta2), "0.999", IN_HO(0, 1),
     .help = "AdamW decay rate of the second-moment (variance) estimate."},
    {"adam_epsilon", K_DOUBLE, F(adam_epsilon), "1e-8", GT(0),
     .help = "AdamW term added to the denominator for numerical stability."},
    {"max_grad_norm", K_DOUBLE, F(max_grad_norm), "1.0", GE(0),
     .help = "Clip the global L2 norm of the gradients to this value; 0 = no "
             "clipping."},
    {"bf16", K_BOOL, F(bf16), "false",
     .help = "Mixed precision: matmul inputs rounded to bf16 with fp32 accumulation "
             "(oneDNN; AMX or AVX512-BF16 where the CPU has them), fp32 master "
             "weights, gradients, norms, softmax, loss and AdamW, as torch.autocast. "
             "Applies to every forward (reference, reward, generation). TRL's "
             "default is true; here false, so a run is fp32 unless asked."},
    {"fp16", K_BOOL, F(fp16), "false",
     .help = "Refused: fp16 needs loss scaling and CPUs have no fp16 matmul units "
             "worth it; use bf16: true."},
    {"num_train_epochs", K_DOUBLE, F(num_train_epochs), "3.0", GT(0),
     .help = "Passes over the training split (fractions allowed); ignored when "
             "max_steps > 0."},
    {"max_steps", K_INT, F(max_steps), "-1", GE(-1),
     .help = "Total optimizer steps when > 0, overriding num_train_epochs; -1 = from "
             "num_train_epochs."},

    {"save_dtype", K_ENUM, F(save_dtype), "float32", .choices = save_dtype_choices,
     .group = "Logging and evaluation",
     .help = "Dtype of the exported model.safetensors: float32, or bfloat16 (rounded "
             "to nearest even) for half the size."},
    {"export_steps", K_INT, F(export_steps), "0", GE(0),
     .group = "Logging and evaluation",
     .help = "Also export the model as a Hugging Face folder "
             "<output_dir>/checkpoint-<step> every this many steps; 0: only at the "
             "end."},
    {"save_strategy", K_ENUM, F(save_strategy), "steps", .choices = save_strategy_choices,
     .group = "Checkpoints",
     .help = "When to write a checkpoint <output_dir>/checkpoint-<step>.h5 (model, "
             "optimizer and training state, parallel HDF5): every save_steps steps, "
             "at the end of each epoch, or no; with steps or epoch also after the "
             "last step."},
    {"save_steps", K_INT, F(save_steps), "500", GE(1),
     .help = "Steps between checkpoints when save_strategy is steps."},
    {"save_total_limit", K_INT, F(save_total_limit), "0", GE(0),
     .help = "Keep at most this many checkpoints, deleting the oldest once a newer one "
             "is complete; 0 keeps all."},
    {"save_only_model", K_BOOL, F(save_only_model), "false",
     .help = "Checkpoints hold the model only, not the optimizer state (smaller, but "
             "training cannot resume from them)."},
    {"resume_from_checkpoint", K_STRING, F(resume_from_checkpoint), "",
     .help = "Continue a run from a checkpoint: latest (the one <output_dir>/latest "
             "names), a checkpoint-<step>.h5 file, or a folder holding one; works "
             "on any rank count and zero_stage."},

    {"logging_steps", K_INT, F(logging_steps), "10", GE(1),
     .group = "Logging and evaluation",
     .help = "Log loss, learning rate and throughput every this many optimizer steps."},
    {"eval_steps", K_INT, F(eval_steps), "0", GE(0),
     .help = "Evaluate on the test split every this many steps; 0 = only before and "
             "after training."},
    {"per_device_eval_batch_size", K_INT, F(per_device_eval_batch_size), "8", GE(1),
     .help = "Sequences per rank per evaluation batch."},
    {"eval_max_new_tokens", K_INT, F(eval_max_new_tokens), "0", GE(0),
     .help = "Greedily generate up to this many tokens per test prompt and report "
             "exact-match accuracy; 0 = off."},
    {"eval_max_samples", K_INT, F(eval_max_samples), "0", GE(0),
     .help = "Evaluate on at most this many test rows; 0 = the whole split."},

    {"train_sampling_strategy", K_ENUM, F(train_sampling_strategy), "random",
     .choices = sampling_choices,
     .help = "Order of the training rows: random (a seeded shuffle each epoch) or "
             "sequential (file order). kto with its KL term defaults to sequential, "
             "as TRL's KTOConfig does."},

    {"beta", K_DOUBLE, F(beta), "0.1", GE(0),
     .group = "Preference and reward methods (dpo, kto, orpo, cpo, bco, reward)",
     .help = "Strength of the implicit KL penalty (dpo, kto, cpo, bco; orpo's "
             "weight of the odds-ratio term; ipo's tau)."},
    {"loss_type", K_STRING, F(loss_type), "",
     .help = "dpo: sigmoid, hinge, ipo, exo_pair, nca_pair, robust, bco_pair, "
             "sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft, "
             "sigmoid_norm, or a list of them (MPO: [sigmoid, bco_pair, sft]); kto: "
             "kto or apo_zero_unpaired; cpo: sigmoid, hinge, ipo or simpo. Empty = "
             "the method's default (sigmoid, kto, sigmoid)."},
    {"loss_weights", K_STRING, F(loss_weights), "",
     .help = "dpo: one weight per loss_type entry (a list); empty = 1 each."},
    {"label_smoothing", K_DOUBLE, F(label_smoothing), "0", IN(0, 1),
     .help = "dpo robust: the label-flip rate (< 0.5); exo_pair: its epsilon "
             "(1e-3 suggested); aot, aot_unpaired and cpo sigmoid: smoothing."},
    {"use_weighting", K_BOOL, F(use_weighting), "false",
     .help = "dpo: weight each pair by its WPO weight (not with aot losses)."},
    {"ld_alpha", K_DOUBLE, F(ld_alpha), "1.0", IN(0, 1),
     .help = "dpo: LD-DPO's weight of the completion tokens past the shorter of the "
             "pair's two; 1 = TRL's None (every token counts fully)."},
    {"f_divergence_type", K_ENUM, F(f_divergence_type), "reverse_kl",
     .choices = fdiv_choices,
     .help = "dpo: the f-divergence of the implicit reward (f-DPO)."},
    {"f_alpha_divergence_coef", K_DOUBLE, F(f_alpha_divergence_coef), "0.5",
     .help = "dpo: alpha of alpha_divergence."},
    {"discopop_tau", K_DOUBLE, F(discopop_tau), "0.05", GT(0),
     .help = "dpo discopop: temperature of the mixing between its two terms."},
    {"precompute_ref_log_probs", K_BOOL, F(precompute_ref_log_probs), "false",
     .help =
         "dpo, kto, bco: compute the reference log-probs of every example in one pass "
         "before training and keep them with the data; no reference model is "
         "held during training."},
    {"ref_model_name_or_path", K_STRING, F(ref_model_name_or_path), "",
     .help = "dpo, kto, bco: folder of the reference model; empty = a frozen copy of the "
             "model training starts from."},
    {"sync_ref_model", K_BOOL, F(sync_ref_model), "false",
     .help = "dpo, kto, bco: TR-DPO: every ref_model_sync_steps steps the reference "
             "becomes alpha * policy + (1 - alpha) * reference."},
    {"ref_model_mixup_alpha", K_DOUBLE, F(ref_model_mixup_alpha), "0.6", IN(0, 1),
     .help = "sync_ref_model: the policy's share alpha in each update."},
    {"ref_model_sync_steps", K_INT, F(ref_model_sync_steps), "512", GE(1),
     .help = "sync_ref_model: optimizer steps between reference updates."},
    {"center_rewards_coefficient", K_DOUBLE, F(center_rewards_coefficient), "0", GE(0),
     .help = "reward: weight of mean((r_chosen + r_rejected)^2), which keeps rewards "
             "centred on zero (0.01 suggested); 0 = TRL's None."},
    {"desirable_weight", K_DOUBLE, F(desirable_weight), "1.0", GT(0),
     .help = "kto: weight of the desirable examples' losses."},
    {"undesirable_weight", K_DOUBLE, F(undesirable_weight), "1.0", GT(0),
     .help = "kto: weight of the undesirable examples' losses."},
    {"cpo_alpha", K_DOUBLE, F(cpo_alpha), "1.0", GE(0),
     .help = "cpo: weight of the NLL of the chosen completions (SimPO: 0)."},
    {"simpo_gamma", K_DOUBLE, F(simpo_gamma), "0.5",
     .help = "cpo simpo: the target reward margin gamma."},
    {"alpha", K_DOUBLE, F(alpha), "0",
     .help = "cpo: AlphaPO's alpha; 0 = the log-probability reward."},

    {"generation_ranks", K_INT, F(generation_ranks), "0", GE(0),
     .group = "Online methods (grpo, rloo, ppo): rollouts and rewards",
     .help = "Reserve the last K ranks of the job for generation: each holds the whole "
             "policy, receives the new weights after every optimizer step as one "
             "packed transfer and samples the next rollouts while the trainers "
             "train; 0 = the trainers generate themselves between steps."},
    {"max_staleness", K_INT, F(max_staleness), "1", IN(0, 16),
     .help = "With generation_ranks: the rollouts of step s are sampled with the "
             "weights of step s - max_staleness, so generation overlaps training; "
             "0 = fully synchronous (generators wait for the newest weights)."},
    {"num_generations", K_INT, F(num_generations), "8", GE(2),
     .help = "Completions sampled per prompt (a group); the global batch of "
             "completions must be a multiple of it. rloo's default is 2."},
    {"max_prompt_length", K_INT, F(max_prompt_length), "512", GE(1),
     .help = "Prompts longer than this keep their last tokens."},
    {"max_completion_length", K_INT, F(max_completion_length), "512", GE(1),
     .help = "Longest sampled completion in tokens (ppo: also read as "
             "response_length)."},
    {"temperature", K_DOUBLE, F(temperature), "1.0", GT(0),
     .help = "Sampling temperature; the training log-probs divide the logits by it "
             "too. ppo's default is 0.7."},
    {"top_p", K_DOUBLE, F(top_p), "1.0", IN_LO(0, 1),
     .help = "Nucleus sampling: keep the smallest set of tokens with mass >= top_p."},
    {"top_k", K_INT, F(top_k), "0", GE(0),
     .help = "Keep only the top_k most likely tokens; 0 = off."},
    {"min_p", K_DOUBLE, F(min_p), "0", IN(0, 1),
     .help = "Drop tokens below min_p times the most likely one's probability; 0 = "
             "off."},
    {"repetition_penalty", K_DOUBLE, F(repetition_penalty), "1.0", GT(0),
     .help = "Penalise tokens already in the prompt or completion (> 1)."},
    {"num_iterations", K_INT, F(num_iterations), "1", GE(1),
     .help = "Optimizer steps on each generated batch (mu); > 1 computes the old "
             "policy's log-probs first."},
    {"epsilon", K_DOUBLE, F(epsilon), "0.2", GT(0),
     .help = "Lower clipping bound of the ratio: clip(rho, 1 - epsilon, 1 + "
             "epsilon_high)."},
    {"epsilon_high", K_DOUBLE, F(epsilon_high), "0", GE(0),
     .help = "Upper clipping bound; 0 = TRL's None (epsilon). DAPO uses 0.28."},
    {"delta", K_DOUBLE, F(delta), "0", GE(0),
     .help = "grpo: two-sided clipping, the ratio of the unclipped term capped at "
             "delta (> 1 + epsilon); 0 = TRL's None (off)."},
    {"importance_sampling_level", K_ENUM, F(importance_sampling_level), "token",
     .choices = is_level_choices,
     .help = "grpo: the ratio per token, or one per completion from its mean "
             "log-ratio (sequence: GSPO)."},
    {"scale_rewards", K_ENUM, F(scale_rewards), "group", .choices = scale_rewards_choices,
     .help = "grpo: divide advantages by the std of the group, of the whole batch, or "
             "not at all (none: Dr. GRPO)."},
    {"mask_truncated_completions", K_BOOL, F(mask_truncated_completions), "false",
     .help = "Leave completions that hit max_completion_length without EOS out of "
             "the loss."},
    {"top_entropy_quantile", K_DOUBLE, F(top_entropy_quantile), "1.0", IN_LO(0, 1),
     .help = "grpo: train only on tokens whose entropy is in this top fraction of the "
             "batch's (0.2 in the paper); 1 = every token."},
    {"reward_funcs", K_STRING, F(reward_funcs), "accuracy",
     .help = "Built-in reward functions, a list: accuracy (the final answer against "
             "the solution column), format (the whole completion matches "
             "format_pattern), think_format, soft_overlong (length: the soft "
             "overlong punishment). reward_model and reward_command add theirs; [] "
             "= only those."},
    {"reward_weights", K_STRING, F(reward_weights), "",
     .help = "One weight per reward (reward_funcs in order, then reward_model, then "
             "reward_command); empty = 1 each."},
    {"reward_model", K_STRING, F(reward_model), "",
     .help = "Folder of a sequence-classification reward model (trained by the reward "
             "method, or a Hugging Face one) scoring prompt + completion; ppo's "
             "reward_model_path."},
    {"reward_command", K_STRING, F(reward_command), "",
     .help =
         "A program (run with /bin/sh -c, once per trainer rank) scoring "
         "completions over JSON lines on stdin/stdout; see inputs/reward_example.py."},
    {"reward_timeout", K_DOUBLE, F(reward_timeout), "120", GT(0),
     .help = "Seconds reward_command may take to score one batch."},
    {"format_pattern", K_STRING, F(format_pattern), "",
     .help = "The regular expression (PCRE2, dot matches newline) of the format "
             "reward; empty = the think_format preset."},
    {"solution_column", K_STRING, F(solution_column), "",
     .help = "The dataset column the accuracy reward compares with; empty = solution, "
             "else answer."},
    {"soft_punish_cache", K_INT, F(soft_punish_cache), "0", GE(0),
     .help = "soft_overlong: the tokens before max_completion_length over which the "
             "penalty grows from 0 to -1; 0 = max_completion_length / 4."},
    {"vllm_importance_sampling_correction", K_BOOL,
     F(vllm_importance_sampling_correction), "true",
     .help = "Re-weight the loss by exp(old - sampling log-probs) for the mismatch "
             "between the generator's and the trainer's log-probs (stale weights)."},
    {"vllm_importance_sampling_mode", K_ENUM, F(vllm_importance_sampling_mode),
     "sequence_mask", .choices = is_mode_choices,
     .help = "Per token or per sequence; truncate clamps the ratio to [clip_min, "
             "clip_max], mask zeroes the loss outside it."},
    {"vllm_importance_sampling_clip_max", K_DOUBLE, F(vllm_importance_sampling_clip_max),
     "3.0", GT(0), .help = "Upper bound of the importance-sampling ratio."},
    {"vllm_importance_sampling_clip_min", K_DOUBLE, F(vllm_importance_sampling_clip_min),
     "0", GE(0), .help = "Lower bound of the importance-sampling ratio; 0 = TRL's None."},
    {"normalize_advantages", K_BOOL, F(normalize_advantages), "false",
     .help = "rloo: standardise the advantages over the batch."},
    {"reward_clip_range", K_STRING, F(reward_clip_range), "",
     .help = "rloo: [low, high] to clamp the combined reward to; empty = off."},
    {"num_ppo_epochs", K_INT, F(num_ppo_epochs), "4", GE(1),
     .help = "ppo: passes over each batch of rollouts."},
    {"num_mini_batches", K_INT, F(num_mini_batches), "1", GE(1),
     .help = "ppo: optimizer steps per pass (the batch is split this many ways)."},
    {"kl_coef", K_DOUBLE, F(kl_coef), "0.05", GE(0),
     .help = "ppo: weight of the per-token KL penalty in the reward."},
    {"kl_estimator", K_ENUM, F(kl_estimator), "k1", .choices = kl_estimator_choices,
     .help = "ppo: k1 = lp - ref, k3 = exp(ref - lp) - 1 - (ref - lp)."},
    {"cliprange", K_DOUBLE, F(cliprange), "0.2", GT(0),
     .help = "ppo: clipping of the policy ratio."},
    {"cliprange_value", K_DOUBLE, F(cliprange_value), "0.2", GT(0),
     .help = "ppo: clipping of the value around its rollout value."},
    {"vf_coef", K_DOUBLE, F(vf_coef), "0.1", GE(0),
     .help = "ppo: weight of the value loss."},
    {"gamma", K_DOUBLE, F(gamma), "1.0", IN(0, 1), .help = "ppo: discount factor."},
    {"lam", K_DOUBLE, F(lam), "0.95", IN(0, 1), .help = "ppo: GAE lambda."},
    {"whiten_rewards", K_BOOL, F(whiten_rewards), "false",
     .help = "ppo: whiten the per-token rewards before GAE."},
    {"missing_eos_penalty", K_DOUBLE, F(missing_eos_penalty), "0", GE(0),
     .help = "ppo: subtracted from the score of a completion without EOS; 0 = "
             "TRL's None."},
    {"value_model_path", K_STRING, F(value_model_path), "",
     .help = "ppo: folder the value model starts from; empty = reward_model."},
    {"log_completions", K_BOOL, F(log_completions), "false",
     .help = "Write each logged step's prompts, completions and rewards to "
             "output_dir/completions.jsonl."},

    {"use_peft", K_BOOL, F(use_peft), "false",
     .group = "LoRA (TRL's ModelConfig PEFT keys)",
     .help = "Train LoRA adapters on a frozen base (PEFT's LoraConfig): no gradients "
             "or optimizer state for the base; the output is adapter_config.json and "
             "adapter_model.safetensors."},
    {"lora_r", K_INT, F(lora_r), "16", GE(1), .help = "LoRA rank r."},
    {"lora_alpha", K_DOUBLE, F(lora_alpha), "32", GT(0),
     .help = "LoRA alpha: the adapter output is scaled by alpha / r."},
    {"lora_dropout", K_DOUBLE, F(lora_dropout), "0.05", IN_HO(0, 1),
     .help = "Dropout on the adapters' input, in training forwards only (dpo's "
             "disable_dropout turns it off, as in TRL)."},
    {"lora_target_modules", K_STRING, F(lora_target_modules), "",
     .help = "Modules to adapt: a list of names, each matching a module whose name "
             "is it or ends with '.' and it (PEFT's rule), or all-linear (every "
             "linear layer but the output head); empty = PEFT's default for the "
             "model type (q_proj, v_proj; gpt2 c_attn; lfm2 has none)."},
    {"lora_modules_to_save", K_STRING, F(lora_modules_to_save), "",
     .help = "Modules trained whole beside the adapters: lm_head (untied models); a "
             "reward model's score always is."},
    {"disable_dropout", K_BOOL, F(disable_dropout), "false",
     .help = "Turn dropout (here: LoRA's) off in training as well; TRL's default is "
             "true for dpo, kto, orpo, cpo, bco and reward."},
    {"use_rslora", K_BOOL, F(use_rslora), "false",
     .help = "Rank-stabilised LoRA: scale alpha / sqrt(r) instead of alpha / r."},
    {"base_model_name_or_path", K_STRING, F(base_model_name_or_path), "",
     .help = "With model_name_or_path an adapter folder: the base model to load "
             "under it; empty = the adapter_config.json's base_model_name_or_path."},
    {"model.architecture", K_ENUM, F(model.arch), "llama", .choices = arch_choices,
     .group = "Model (the YAML `model:` block; Hugging Face config.json names)",
     .help = "Model family: llama (RMSNorm, RoPE, SwiGLU, grouped-query attention; "
             "Qwen2 = llama + attention_bias), gpt2, or lfm2 (Liquid AI: gated "
             "short-convolution and attention layers, see layer_types)."},
    {"model.vocab_size", K_INT, F(model.vocab_size), "258", GE(2),
     .help = "Rows of the token-embedding matrix; must cover the tokenizer's "
             "vocabulary."},
    {"model.hidden_size", K_INT, F(model.hidden_size), "64", GE(1),
     .help = "Width of the residual stream; a multiple of num_attention_heads."},
    {"model.num_hidden_layers", K_INT, F(model.num_hidden_layers), "2", GE(1),
     .help = "Number of transformer blocks."},
    {"model.num_attention_heads", K_INT, F(model.num_attention_heads), "4", GE(1),
     .help = "Query heads per layer; head size = hidden_size / num_attention_heads."},
    {"model.num_key_value_heads", K_INT, F(model.num_key_value_heads), "0", GE(0),
     .help = "Key/value heads for grouped-query attention (llama); 0 = "
             "num_attention_heads."},
    {"model.intermediate_size", K_INT, F(model.intermediate_size), "0", GE(0),
     .help = "Inner width of the MLP; 0 = derived from hidden_size."},
    {"model.max_position_embeddings", K_INT, F(model.max_position_embeddings), "1024",
     GE(1),
     .help = "Longest sequence the model can take (gpt2: rows of the position "
             "table)."},
    {"model.tie_word_embeddings", K_BOOL, F(model.tie_word_embeddings), "true",
     .help = "The output layer shares the token-embedding matrix."},
    {"model.attention_bias", K_BOOL, F(model.attention_bias), "false",
     .help = "Biases on the query/key/value projections (llama family; Qwen2 sets "
             "true)."},
    {"model.rope_theta", K_FLOAT, F(model.rope_theta), "10000", GT(0),
     .help = "Base of the rotary position-embedding frequencies (llama)."},
    {"model.norm_eps", K_FLOAT, F(model.norm_eps), "1e-5", GT(0),
     .help = "Epsilon of RMSNorm / LayerNorm; also accepted under the Hugging Face "
             "names rms_norm_eps and layer_norm_epsilon."},
    {"model.initializer_range", K_FLOAT, F(model.initializer_range), "0.02", GE(0),
     .help = "Standard deviation of the normal initialization of a new model's "
             "weights."},
    {"model.layer_types", K_STRING, F(model_layer_types), "",
     .help = "lfm2: one of conv or full_attention per layer (a list); empty = "
             "every layer attention, as Hugging Face's Lfm2Config."},
    {"model.conv_L_cache", K_INT, F(model.conv_L_cache), "3", GE(1),
     .help = "lfm2: kernel length of the short convolution."},
    {"model.conv_bias", K_BOOL, F(model.conv_bias), "false",
     .help = "lfm2: biases on conv.in_proj, conv.conv and conv.out_proj."},
};

#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= sizeof(((Config *)0)->given), "Config.given has a slot per key");

/* Keys whose YAML value may also be a sequence of scalars, stored joined by
 * commas (the command line writes the commas itself). */
static int is_list_key(const Key *k)
{
	static const char *const lists[] = {
	    "loss_type",           "loss_weights",         "reward_funcs",
	    "reward_weights",      "reward_clip_range",    "model.layer_types",
	    "lora_target_modules", "lora_modules_to_save", NULL};
	for (int i = 0; lists[i]; i++)
		if (strcmp(k->name, lists[i]) == 0)
			return 1;
	return 0;
}

/* Other names for a key, as Hugging Face config.json files spell it. */
static const struct {
	const char *name, *target;
} aliases[] = {
    {"model.rms_norm_eps", "model.norm_eps"},
    {"model.layer_norm_epsilon", "model.norm_eps"},
    {"response_length", "max_completion_length"},
    {"reward_model_path", "reward_model"},
};

#define NALIASES (sizeof aliases / sizeof aliases[0])

static const char model_prefix[] = "model.";
#define MODEL_PREFIX_LEN (sizeof model_prefix - 1)

static int is_model_key(const char *name)
{
	return strncmp(name, model_prefix, MODEL_PREFIX_LEN) == 0;
}

static const Key *key_find(const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	for (size_t i = 0; i < NALIASES; i++)
		if (strcmp(aliases[i].name, name) == 0)
			return key_find(aliases[i].target);
	return NULL;
}

static int lower(int ch)
{
	return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch;
}

static int ci_equal(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (lower((unsigned char)*a) != lower((unsigned char)*b))
			return 0;
	return *a == *b;
}

static int ci_member(const char *s, const char *const *set)
{
	for (; *set; set++)
		if (ci_equal(s, *set))
			return 1;
	return 0;
}

/* Optimal-string-alignment (Damerau-Levenshtein) distance, case-insensitive. */
#define DIST_MAX_LEN 64
static int edit_distance(const char *a, const char *b)
{
	size_t n = strlen(a), m = strlen(b);
	if (n > DIST_MAX_LEN || m > DIST_MAX_LEN)
		return INT_MAX;
	int d[DIST_MAX_LEN + 1][DIST_MAX_LEN + 1];
	for (size_t i = 0; i <= n; i++)
		d[i][0] = (int)i;
	for (size_t j = 0; j <= m; j++)
		d[0][j] = (int)j;
	for (size_t i = 1; i <= n; i++) {
		for (size_t j = 1; j <= m; j++) {
			int ca = lower((unsigned char)a[i - 1]),
			    cb = lower((unsigned char)b[j - 1]);
			int best = d[i - 1][j - 1] + (ca != cb);
			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && ca == lower((unsigned char)b[j - 2]) &&
			    lower((unsigned char)a[i - 2]) == cb &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[n][m];
}

static int close_enough(const char *typed, int dist)
{
	int len = (int)strlen(typed);
	int limit = len / 3 > 2 ? len / 3 : 2;
	return dist <= limit && dist < len;
}

/* Where an unknown name was found, which decides the candidates for a suggestion. */
typedef enum {
	SCOPE_TOP,   /* YAML top level: training keys, `model`, dotted model keys */
	SCOPE_MODEL, /* inside the YAML `model:` block: model keys without the prefix */
	SCOPE_ANY    /* command line and config_set: every full name */
} Scope;

typedef struct Suggestion {
	const char *name;
	int dist;
	int in_block; /* name is a bare model key, typed at the YAML top level */
} Suggestion;

static void consider(Suggestion *s, const char *typed, const char *candidate,
                     const char *name, int in_block)
{
	int dist = edit_distance(typed, candidate);
	if (dist < s->dist) {
		s->name = name;
		s->dist = dist;
		s->in_block = in_block;
	}
}

/* Writes " (did you mean ...?)" or a pointer to --help into buf. */
static void unknown_hint(const char *typed, Scope scope, const char *dash, char *buf,
                         size_t cap)
{
	Suggestion s = {NULL, INT_MAX, 0};
	if (scope == SCOPE_TOP)
		consider(&s, typed, "model", "model", 0);
	for (size_t i = 0; i < NKEYS + NALIASES; i++) {
		const char *name = i < NKEYS ? keys[i].name : aliases[i - NKEYS].name;
		const char *bare = is_model_key(name) ? name + MODEL_PREFIX_LEN : name;
		if (!is_model_key(name)) {
			if (scope != SCOPE_MODEL)
				consider(&s, typed, name, name, 0);
		} else if (scope == SCOPE_MODEL) {
			consider(&s, typed, bare, bare, 0);
		} else {
			consider(&s, typed, name, name, 0);
			consider(&s, typed, bare, scope == SCOPE_TOP ? bare : name,
			         scope == SCOPE_TOP);
		}
	}
	if (s.name && s.in_block && s.dist == 0)
		snprintf(buf, cap, " ('%s' is a model key: put it in the `model:` block)",
		         s.name);
	else if (s.name && s.in_block && close_enough(typed, s.dist))
		snprintf(buf, cap, " (did you mean '%s' in the `model:` block?)", s.name);
	else if (s.name && close_enough(typed, s.dist))
		snprintf(buf, cap, " (did you mean '%s%s'?)", dash, s.name);
	else
		snprintf(buf, cap, " (run `trl-hpc --help` for the list of keys)");
}

static void *field(const Key *k, Config *c)
{
	return (char *)c + k->off;
}
static const void *cfield(const Key *k, const Config *c)
{
	return (const char *)c + k->off;
}

static void range_text(const Key *k, char *buf, size_t cap)
{
	if ((k->bounds & (LO | HI)) == (LO | HI))
		snprintf(buf, cap, "%s %g and %s %g",
		         k->bounds & LO_OPEN ? ">" : ">=", k->lo,
		         k->bounds & HI_OPEN ? "<" : "<=", k->hi);
	else if (k->bounds & LO)
		snprintf(buf, cap, "%s %g", k->bounds & LO_OPEN ? ">" : ">=", k->lo);
	else if (k->bounds & HI)
		snprintf(buf, cap, "%s %g", k->bounds & HI_OPEN ? "<" : "<=", k->hi);
	else
		buf[0] = '\0';
}

static void choices_text(const Key *k, char *buf, size_t cap)
{
	size_t n = 0;
	buf[0] = '\0';
	for (const char *const *ch = k->choices; *ch && n < cap; ch++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%s",
		                      ch == k->choices ? "" : ", ", *ch);
}

/* What a valid value looks like, for error messages: "a float >= 0". */
static void expected_text(const Key *k, char *buf, size_t cap)
{
	char range[192];
	range_text(k, range, sizeof range);
	switch (k->type) {
	case K_INT:
	case K_LONG:
		snprintf(buf, cap, "an integer%s%s", range[0] ? " " : "", range);
		break;
	case K_DOUBLE:
	case K_FLOAT:
		snprintf(buf, cap, "a float%s%s", range[0] ? " " : "", range);
		break;
	case K_BOOL:
		snprintf(buf, cap, "true or false");
		break;
	case K_TRIBOOL:
		snprintf(buf, cap, "true, false or null");
		break;
	case K_STRING:
		snprintf(buf, cap, "a string of at most %zu characters", k->size - 1);
		break;
	case K_ENUM:
		choices_text(k, range, sizeof range);
		snprintf(buf, cap, "one of: %s", range);
		break;
	}
}

static int in_range(const Key *k, double v)
{
	if (k->bounds & LO && (k->bounds & LO_OPEN ? v <= k->lo : v < k->lo))
		return 0;
	if (k->bounds & HI && (k->bounds & HI_OPEN ? v >= k->hi : v > k->hi))
		return 0;
	return 1;
}

static const char *const true_words[] = {"true", "yes", "on", "1", NULL};
static const char *const false_words[] = {"false", "no", "off", "0", NULL};
static const char *const null_words[] = {"null", "none", "~", NULL};

/* Stores text into k's field of c. A plain YAML null (empty, ~, null) is "" for a
 * string and None for a tri-state bool. On failure writes the reason, without the
 * key, into why and returns TRL_EINVAL; c is unchanged. */
static int parse_value(const Key *k, Config *c, const char *text, int yaml_null,
                       char *why, size_t cap)
{
	char expect[256];
	expected_text(k, expect, sizeof expect);
	if (k->type == K_STRING) {
		size_t len = yaml_null ? 0 : strlen(text);
		if (len >= k->size) {
			snprintf(why, cap,
			         "the value is too long (%zu characters; at most %zu)",
			         len, k->size - 1);
			return TRL_EINVAL;
		}
		memset(field(k, c), 0, k->size);
		memcpy(field(k, c), text, len);
		return 0;
	}
	if (k->type == K_TRIBOOL &&
	    (yaml_null || text[0] == '\0' || ci_member(text, null_words))) {
		*(int *)field(k, c) = -1;
		return 0;
	}
	if (yaml_null || text[0] == '\0') {
		snprintf(why, cap, "missing value (expected %s)", expect);
		return TRL_EINVAL;
	}
	char *end;
	switch (k->type) {
	case K_INT:
	case K_LONG: {
		errno = 0;
		long long v = strtoll(text, &end, 10);
		if (end == text || *end || isspace((unsigned char)text[0])) {
			snprintf(why, cap, "'%.200s' is not an integer (expected %s)",
			         text, expect);
			return TRL_EINVAL;
		}
		int fits = errno != ERANGE &&
		           (k->type == K_LONG || (v >= INT_MIN && v <= INT_MAX));
		if (!fits) {
			snprintf(
			    why, cap,
			    "'%.200s' does not fit in a %d-bit integer (expected %s)",
			    text, k->type == K_INT ? 32 : (int)(8 * sizeof(long)),
			    expect);
			return TRL_EINVAL;
		}
		if (!in_range(k, (double)v)) {
			range_text(k, expect, sizeof expect);
			snprintf(why, cap, "%s is out of range (allowed: %s)", text,
			         expect);
			return TRL_EINVAL;
		}
		if (k->type == K_INT)
			*(int *)field(k, c) = (int)v;
		else
			*(long *)field(k, c) = (long)v;
		return 0;
	}
	case K_DOUBLE:
	case K_FLOAT: {
		double v = strtod(text, &end);
		if (end == text || *end || isspace((unsigned char)text[0])) {
			snprintf(why, cap, "'%.200s' is not a number (expected %s)", text,
			         expect);
			return TRL_EINVAL;
		}
		if (!isfinite(v) || (k->type == K_FLOAT && fabs(v) > FLT_MAX)) {
			snprintf(why, cap,
			         "'%.200s' is not a finite %s number (expected %s)", text,
			         k->type == K_FLOAT ? "32-bit" : "64-bit", expect);
			return TRL_EINVAL;
		}
		/* A float field is checked after rounding, so 1e-50 cannot pass "> 0". */
		if (k->type == K_FLOAT)
			v = (double)(float)v;
		if (!in_range(k, v)) {
			range_text(k, expect, sizeof expect);
			snprintf(why, cap, "%s is out of range (allowed: %s)", text,
			         expect);
			return TRL_EINVAL;
		}
		if (k->type == K_FLOAT)
			*(float *)field(k, c) = (float)v;
		else
			*(double *)field(k, c) = v;
		return 0;
	}
	case K_BOOL:
	case K_TRIBOOL:
		if (ci_member(text, true_words) || ci_member(text, false_words)) {
			*(int *)field(k, c) = ci_member(text, true_words);
			return 0;
		}
		snprintf(why, cap, "'%.200s' is not a boolean (expected %s)", text,
		         expect);
		return TRL_EINVAL;
	case K_ENUM: {
		const char *best = NULL;
		int best_dist = INT_MAX;
		for (int i = 0; k->choices[i]; i++) {
			if (ci_equal(text, k->choices[i])) {
				*(int *)field(k, c) = i;
				return 0;
			}
			int dist = edit_distance(text, k->choices[i]);
			if (dist < best_dist)
				best = k->choices[i], best_dist = dist;
		}
		size_t n = (size_t)snprintf(why, cap, "'%.200s' is not %s", text, expect);
		if (best && close_enough(text, best_dist) && n < cap)
			snprintf(why + n, cap - n, " (did you mean '%s'?)", best);
		return TRL_EINVAL;
	}
	case K_STRING:
		break;
	}
	return TRL_EINTERNAL;
}

void config_defaults(Config *c)
{
	/* Zeroing first makes padding and string tails deterministic, so two configs
	 * with equal values compare equal with memcmp. */
	memset(c, 0, sizeof *c);
	for (size_t i = 0; i < NKEYS; i++) {
		char why[256];
		int rc = parse_value(&keys[i], c, keys[i].def, 0, why, sizeof why);
		assert(rc == 0 && "every schema default passes its own validation");
		(void)rc;
	}
}

/* Sets key from text; messages read "<origin>: <dash><key>: <reason>". */
static int set_named(Config *c, const char *key, const char *value, const char *origin,
                     const char *dash, TrlErr *err)
{
	const char *org = origin ? origin : "";
	const Key *k = key_find(key);
	if (!k) {
		char hint[160];
		unknown_hint(key, SCOPE_ANY, dash, hint, sizeof hint);
		return trl_errf(err, TRL_EINVAL, "%s: unknown %s '%s%.200s'%s", org,
		                dash[0] ? "option" : "key", dash, key, hint);
	}
	char why[1024], flat[1024];
	const char *v = value ? value : "";
	/* A list on the command line is written as a YAML flow sequence, "[a, b]";
	 * the schema stores it joined by commas. */
	if (is_list_key(k) && v[0] == '[') {
		size_t n = 0, len = strlen(v);
		if (len < 2 || v[len - 1] != ']')
			return trl_errf(err, TRL_EINVAL,
			                "%s: %s%s: '%.200s' opens a list with [ but does "
			                "not end with ]",
			                org, dash, key, v);
		for (size_t i = 1; i + 1 < len && n + 1 < sizeof flat; i++)
			if (v[i] != ' ' && v[i] != '\t' && v[i] != '"' && v[i] != '\'')
				flat[n++] = v[i];
		flat[n] = 0;
		v = flat;
	}
	if (parse_value(k, c, v, 0, why, sizeof why))
		return trl_errf(err, TRL_EINVAL, "%s: %s%s: %s", org, dash, key, why);
	c->given[k - keys] = 1;
	return 0;
}

int config_set(Config *c, const char *key, const char *value, const char *origin,
               TrlErr *err)
{
	return set_named(c, key, value, origin, "", err);
}

/* A value to show in "needs a value" messages. */
static const char *example_value(const Key *k)
{
	if (k->type == K_BOOL || k->type == K_TRIBOOL)
		return "true";
	return k->def[0] ? k->def : "VALUE";
}

int config_apply_args(Config *c, int argc, char **argv, int first, TrlErr *err)
{
	for (int i = first; i < argc; i++) {
		const char *arg = argv[i];
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
			return trl_errf(
			    err, TRL_EINVAL,
			    "command line: unexpected argument '%.200s' (overrides "
			    "are written --key value or --key=value)",
			    arg);
		char key[128];
		const char *eq = strchr(arg + 2, '=');
		size_t len = eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2);
		if (len >= sizeof key)
			len = sizeof key - 1;
		memcpy(key, arg + 2, len);
		key[len] = '\0';
		const char *value = eq ? eq + 1 : NULL;
		if (!value) {
			const Key *k = key_find(key);
			int missing = i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0;
			if (k && missing)
				return trl_errf(err, TRL_EINVAL,
				                "command line: --%s needs a value (for "
				                "example --%s %s)",
				                key, key, example_value(k));
			if (k)
				value = argv[++i];
		}
		int rc = set_named(c, key, value, "command line", "--", err);
		if (rc)
			return rc;
	}
	return 0;
}

/* YAML loading. */

typedef struct Loader {
	yaml_parser_t parser;
	const char *path;
	Config *c;
	TrlErr *err;
	int seen_line[NKEYS + 1]; /* the last slot is the `model:` block itself */
	char seen_as[NKEYS + 1][128];
} Loader;

static int fail_at(Loader *L, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_at(Loader *L, yaml_mark_t m, const char *fmt, ...)
{
	char msg[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return trl_errf(L->err, TRL_EINVAL, "%s:%zu:%zu: %s", L->path, m.line + 1,
	                m.column + 1, msg);
}

static int next_event(Loader *L, yaml_event_t *ev)
{
	if (yaml_parser_parse(&L->parser, ev))
		return 0;
	yaml_parser_t *p = &L->parser;
	const char *problem = p->problem ? p->problem : "unknown error";
	switch (p->error) {
	case YAML_MEMORY_ERROR:
		return trl_errf(L->err, TRL_ENOMEM, "%s: out of memory while parsing",
		                L->path);
	case YAML_READER_ERROR:
		return trl_errf(L->err, TRL_EINVAL,
		                "%s: byte %zu: the file is not valid UTF-8 text (%s)",
		                L->path, p->problem_offset, problem);
	default:
		if (p->context)
			return fail_at(L, p->problem_mark,
			               "YAML syntax error: %s (%s at line %zu)", problem,
			               p->context, p->context_mark.line + 1);
		return fail_at(L, p->problem_mark, "YAML syntax error: %s", problem);
	}
}

static const char *event_what(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SEQUENCE_START_EVENT:
		return "a list";
	case YAML_MAPPING_START_EVENT:
		return "a mapping";
	case YAML_ALIAS_EVENT:
		return "an alias (*name; aliases are not supported)";
	default:
		return "something else";
	}
}

static int is_plain_null(const yaml_event_t *ev)
{
	static const char *const yaml_nulls[] = {"", "~", "null", "Null", "NULL", NULL};
	if (ev->type != YAML_SCALAR_EVENT ||
	    ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	for (const char *const *s = yaml_nulls; *s; s++)
		if (strcmp((const char *)ev->data.scalar.value, *s) == 0)
			return 1;
	return 0;
}

/* Records that slot was set by `typed` at line; a second setting is an error. */
static int check_duplicate(Loader *L, size_t slot, const char *typed, yaml_mark_t m)
{
	if (L->seen_line[slot]) {
		if (strcmp(L->seen_as[slot], typed) == 0)
			return fail_at(L, m, "duplicate key '%s' (first set on line %d)",
			               typed, L->seen_line[slot]);
		return fail_at(L, m, "'%s' sets the same value as '%s' on line %d", typed,
		               L->seen_as[slot], L->seen_line[slot]);
	}
	L->seen_line[slot] = (int)m.line + 1;
	snprintf(L->seen_as[slot], sizeof L->seen_as[slot], "%s", typed);
	return 0;
}

/* Reads the value event of key k and stores it. */
static int load_value(Loader *L, const Key *k)
{
	yaml_event_t ev;
	int rc = next_event(L, &ev);
	if (rc)
		return rc;
	if (ev.type == YAML_SEQUENCE_START_EVENT && is_list_key(k)) {
		yaml_mark_t start = ev.start_mark;
		char joined[1024] = "";
		size_t n = 0;
		yaml_event_delete(&ev);
		for (;;) {
			if ((rc = next_event(L, &ev)))
				return rc;
			if (ev.type == YAML_SEQUENCE_END_EVENT)
				break;
			if (ev.type != YAML_SCALAR_EVENT) {
				rc = fail_at(
				    L, ev.start_mark,
				    "%s: expected a list of single values, found %s",
				    k->name, event_what(&ev));
				yaml_event_delete(&ev);
				return rc;
			}
			const char *s = (const char *)ev.data.scalar.value;
			int w = snprintf(joined + n, sizeof joined - n, "%s%s",
			                 n ? "," : "", s);
			n += w > 0 ? (size_t)w : 0;
			yaml_event_delete(&ev);
			if (n >= sizeof joined)
				return fail_at(L, start, "%s: the list is too long",
				               k->name);
		}
		char why[1024];
		if (parse_value(k, L->c, joined, 0, why, sizeof why))
			rc = fail_at(L, start, "%s: %s", k->name, why);
	} else if (ev.type != YAML_SCALAR_EVENT) {
		rc =
		    fail_at(L, ev.start_mark, "%s: expected a single value%s, found %s",
		            k->name, is_list_key(k) ? " or a list" : "", event_what(&ev));
	} else {
		char why[1024];
		if (parse_value(k, L->c, (const char *)ev.data.scalar.value,
		                is_plain_null(&ev), why, sizeof why))
			rc = fail_at(L, ev.start_mark, "%s: %s", k->name, why);
	}
	yaml_event_delete(&ev);
	if (!rc)
		L->c->given[k - keys] = 1;
	return rc;
}

static int load_mapping(Loader *L, int in_model);

/* Reads the value of the top-level `model` key: a mapping, or nothing. */
static int load_model_block(Loader *L)
{
	yaml_event_t ev;
	int rc = next_event(L, &ev);
	if (rc)
		return rc;
	if (ev.type == YAML_MAPPING_START_EVENT)
		rc = load_mapping(L, 1);
	else if (!is_plain_null(&ev))
		rc = fail_at(
		    L, ev.start_mark,
		    "model: expected a mapping of model keys (indented lines such as "
		    "`hidden_size: 64` below `model:`; a pretrained model is named by "
		    "model_name_or_path), found %s",
		    ev.type == YAML_SCALAR_EVENT ? "a single value" : event_what(&ev));
	yaml_event_delete(&ev);
	return rc;
}

/* Reads key: value pairs up to the end of the mapping whose start was consumed. */
static int load_mapping(Loader *L, int in_model)
{
	for (;;) {
		yaml_event_t ev;
		int rc = next_event(L, &ev);
		if (rc)
			return rc;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			rc = fail_at(L, ev.start_mark, "expected a key name, found %s",
			             event_what(&ev));
			yaml_event_delete(&ev);
			return rc;
		}
		char typed[128], full[160];
		snprintf(typed, sizeof typed, "%s", (const char *)ev.data.scalar.value);
		yaml_mark_t mark = ev.start_mark;
		yaml_event_delete(&ev);

		if (!in_model && strcmp(typed, "model") == 0) {
			rc = check_duplicate(L, NKEYS, typed, mark);
			if (!rc)
				rc = load_model_block(L);
			if (rc)
				return rc;
			continue;
		}
		snprintf(full, sizeof full, "%s%s", in_model ? model_prefix : "", typed);
		const Key *k = key_find(full);
		if (!k) {
			char hint[160];
			unknown_hint(typed, in_model ? SCOPE_MODEL : SCOPE_TOP, "", hint,
			             sizeof hint);
			return fail_at(L, mark, "unknown key '%s'%s%s", typed,
			               in_model ? " in the `model:` block" : "", hint);
		}
		rc = check_duplicate(L, (size_t)(k - keys), typed, mark);
		if (!rc)
			rc = load_value(L, k);
		if (rc)
			return rc;
	}
}

/* Reads the stream: nothing at all, or one document holding a mapping. */
static int load_stream(Loader *L)
{
	yaml_event_t ev;
	int rc = next_event(L, &ev); /* stream start */
	if (rc)
		return rc;
	yaml_event_delete(&ev);
	if ((rc = next_event(L, &ev)))
		return rc;
	if (ev.type == YAML_STREAM_END_EVENT) {
		yaml_event_delete(&ev);
		return 0;
	}
	yaml_event_delete(&ev); /* document start */
	if ((rc = next_event(L, &ev)))
		return rc;
	if (ev.type == YAML_MAPPING_START_EVENT)
		rc = load_mapping(L, 0);
	else if (!is_plain_null(&ev))
		rc = fail_at(
		    L, ev.start_mark,
		    "the top level must be a mapping of `key: value` lines, found %s",
		    ev.type == YAML_SCALAR_EVENT ? "a single value" : event_what(&ev));
	yaml_event_delete(&ev);
	if (rc)
		return rc;
	if ((rc = next_event(L, &ev))) /* document end */
		return rc;
	yaml_event_delete(&ev);
	if ((rc = next_event(L, &ev)))
		return rc;
	if (ev.type == YAML_DOCUMENT_START_EVENT)
		rc = fail_at(L, ev.start_mark,
		             "a second YAML document: a config file holds exactly one");
	yaml_event_delete(&ev);
	return rc;
}

int config_load_yaml(Config *c, const char *path, TrlErr *err)
{
	struct stat st;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return trl_errf(err, TRL_EIO, "cannot read config file '%s': %s", path,
		                strerror(EISDIR));
	FILE *f = fopen(path, "rb");
	if (!f)
		return trl_errf(err, TRL_EIO, "cannot read config file '%s': %s", path,
		                strerror(errno));
	if (strlen(path) >= sizeof c->source) {
		fclose(f);
		return trl_errf(err, TRL_EINVAL,
		                "config file path is too long (%zu characters)",
		                strlen(path));
	}
	Loader *L = calloc(1, sizeof *L);
	if (!L) {
		fclose(f);
		return trl_errf(err, TRL_ENOMEM, "out of memory reading '%s'", path);
	}
	int rc;
	if (!yaml_parser_initialize(&L->parser)) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory reading '%s'", path);
		goto fail;
	}
	L->path = path;
	L->c = c;
	L->err = err;
	yaml_parser_set_input_file(&L->parser, f);
	rc = load_stream(L);
	yaml_parser_delete(&L->parser);
	if (rc == 0 && ferror(f))
		rc = trl_errf(err, TRL_EIO, "cannot read config file '%s': read error",
		              path);
	if (rc == 0) {
		memset(c->source, 0, sizeof c->source);
		memcpy(c->source, path, strlen(path));
	}
fail:
	free(L);
	fclose(f);
	return rc;
}

/* TRL's per-trainer defaults that differ from SFT's, for keys nobody set. */
static void method_defaults(Config *c)
{
	static const struct {
		TrlMethod m;
		const char *key, *value;
	} defs[] = {
	    {TRL_METHOD_REWARD, "learning_rate", "1e-4"},
	    {TRL_METHOD_DPO, "learning_rate", "1e-6"},
	    {TRL_METHOD_KTO, "learning_rate", "1e-6"},
	    {TRL_METHOD_ORPO, "learning_rate", "1e-6"},
	    {TRL_METHOD_CPO, "learning_rate", "1e-6"},
	    {TRL_METHOD_BCO, "learning_rate", "5e-7"},
	    {TRL_METHOD_DPO, "loss_type", "sigmoid"},
	    {TRL_METHOD_KTO, "loss_type", "kto"},
	    {TRL_METHOD_CPO, "loss_type", "sigmoid"},
	    {TRL_METHOD_KTO, "train_sampling_strategy", "sequential"},
	    {TRL_METHOD_GRPO, "learning_rate", "1e-6"},
	    {TRL_METHOD_GRPO, "beta", "0.0"},
	    {TRL_METHOD_GRPO, "loss_type", "dapo"},
	    {TRL_METHOD_RLOO, "learning_rate", "1e-6"},
	    {TRL_METHOD_RLOO, "beta", "0.05"},
	    {TRL_METHOD_RLOO, "num_generations", "2"},
	    {TRL_METHOD_PPO, "learning_rate", "3e-6"},
	    {TRL_METHOD_PPO, "temperature", "0.7"},
	    {TRL_METHOD_PPO, "max_completion_length", "53"},
	    {TRL_METHOD_PPO, "reward_funcs", ""},
	    {TRL_METHOD_DPO, "disable_dropout", "true"},
	    {TRL_METHOD_KTO, "disable_dropout", "true"},
	    {TRL_METHOD_ORPO, "disable_dropout", "true"},
	    {TRL_METHOD_CPO, "disable_dropout", "true"},
	    {TRL_METHOD_BCO, "disable_dropout", "true"},
	    {TRL_METHOD_REWARD, "disable_dropout", "true"},
	};
	for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
		const Key *k = key_find(defs[i].key);
		/* An empty loss_type (a resolved sft config says loss_type: "")
		 * also takes the method's default. */
		int empty = k && k->type == K_STRING && ((char *)field(k, c))[0] == 0;
		if (c->method != defs[i].m || !k || (c->given[k - keys] && !empty))
			continue;
		char why[256];
		int rc = parse_value(k, c, defs[i].value, 0, why, sizeof why);
		assert(rc == 0 && "every method default passes its own validation");
		(void)rc;
	}
}

/* model.layer_types into model.attn_layer (lfm2 only). */
static int parse_layer_types(Config *c, TrlErr *err)
{
	ModelConfig *mc = &c->model;
	const char *s = c->model_layer_types;
	if (mc->arch != TRL_ARCH_LFM2) {
		if (*s)
			return trl_errf(
			    err, TRL_EINVAL,
			    "model.layer_types is given, but architecture %s "
			    "has no layer kinds: drop it or set architecture: "
			    "lfm2",
			    arch_choices[mc->arch]);
		return TRL_OK;
	}
	if (mc->num_hidden_layers > TRL_MAX_LAYERS)
		return trl_errf(err, TRL_EINVAL,
		                "model.num_hidden_layers: %d lfm2 layers (at most %d)",
		                mc->num_hidden_layers, TRL_MAX_LAYERS);
	int n = 0;
	while (*s) {
		size_t len = strcspn(s, ",");
		while (len && s[len - 1] == ' ')
			len--;
		int attn = len == 14 && strncmp(s, "full_attention", 14) == 0;
		if (!attn && !(len == 4 && strncmp(s, "conv", 4) == 0))
			return trl_errf(
			    err, TRL_EINVAL,
			    "model.layer_types: entry %d is '%.*s'; each must "
			    "be conv or full_attention",
			    n, (int)len, s);
		if (n < TRL_MAX_LAYERS)
			mc->attn_layer[n] = (unsigned char)attn;
		n++;
		s += strcspn(s, ",");
		if (*s == ',')
			s += 1 + strspn(s + 1, " ");
	}
	if (n == 0)
		for (int l = 0; l < mc->num_hidden_layers; l++)
			mc->attn_layer[l] = 1;
	else if (n != mc->num_hidden_layers)
		return trl_errf(err, TRL_EINVAL,
		                "model.layer_types has %d entries for %d layers "
		                "(num_hidden_layers): give one per layer",
		                n, mc->num_hidden_layers);
	return TRL_OK;
}

int config_finish(Config *c, TrlErr *err)
{
	method_defaults(c);
	int lrc = parse_layer_types(c, err);
	if (lrc)
		return lrc;
	if (!(c->beta > 0) && c->method != TRL_METHOD_SFT &&
	    !TRL_METHOD_IS_ONLINE(c->method))
		return trl_errf(err, TRL_EINVAL,
		                "beta: %g is out of range for %s: it must be > 0 (0 is "
		                "allowed only for the online methods)",
		                c->beta, method_choices[c->method]);
	if (c->fp16)
		return trl_errf(err, TRL_EUNSUPPORTED,
		                "fp16: true is not supported: fp16 training needs loss "
		                "scaling and CPUs run fp16 matmuls no faster than bf16; "
		                "set bf16: true instead (same memory, fp32's range)");
	if (c->dataset_name[0] == '\0')
		return trl_errf(
		    err, TRL_EINVAL,
		    "dataset_name is not set: point it at a .jsonl file or a folder "
		    "with train.jsonl/test.jsonl");
	if (c->output_dir[0] == '\0')
		return trl_errf(
		    err, TRL_EINVAL,
		    "output_dir is empty: name a folder for checkpoints and logs");
	if (c->model_name_or_path[0] == '\0' &&
	    c->max_length > c->model.max_position_embeddings)
		return trl_errf(
		    err, TRL_EINVAL,
		    "max_length (%d) is larger than model.max_position_embeddings "
		    "(%d): lower max_length or raise model.max_position_embeddings",
		    c->max_length, c->model.max_position_embeddings);
	if (c->eval_max_new_tokens >= c->max_length)
		return trl_errf(
		    err, TRL_EINVAL,
		    "eval_max_new_tokens (%d) leaves no room for the prompt within "
		    "max_length (%d)",
		    c->eval_max_new_tokens, c->max_length);
	return 0;
}

/* Output: YAML, --help and Markdown. */

/* The shortest text that reads back to the same value, always with a dot or an
 * exponent dot so that YAML 1.1 readers (PyYAML) also see a float. */
static void format_real(double v, int is_float, char *buf, size_t cap)
{
	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(buf, cap, "%.1f", v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, cap, "%.*g", prec, v);
		double back = strtod(buf, NULL);
		if (is_float ? (float)back == (float)v : back == v)
			break;
	}
	if (strchr(buf, '.') || strlen(buf) + 3 > cap)
		return;
	char *e = strchr(buf, 'e');
	if (e) {
		memmove(e + 2, e, strlen(e) + 1);
		e[0] = '.';
		e[1] = '0';
	} else {
		strcat(buf, ".0");
	}
}

static void write_quoted(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\x%02x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void write_value(FILE *f, const Key *k, const Config *c)
{
	const void *p = cfield(k, c);
	char buf[64];
	switch (k->type) {
	case K_INT:
		fprintf(f, "%d", *(const int *)p);
		break;
	case K_LONG:
		fprintf(f, "%ld", *(const long *)p);
		break;
	case K_DOUBLE:
		format_real(*(const double *)p, 0, buf, sizeof buf);
		fputs(buf, f);
		break;
	case K_FLOAT:
		format_real((double)*(const float *)p, 1, buf, sizeof buf);
		fputs(buf, f);
		break;
	case K_BOOL:
	case K_TRIBOOL: {
		int v = *(const int *)p;
		fputs(v < 0 ? "null" : v ? "true" : "false", f);
		break;
	}
	case K_STRING:
		write_quoted(f, (const char *)p);
		break;
	case K_ENUM: {
		int v = *(const int *)p, n = 0;
		while (k->choices[n])
			n++;
		if (v >= 0 && v < n)
			fputs(k->choices[v], f);
		else
			fprintf(f, "%d", v);
		break;
	}
	}
}

void config_write_yaml(const Config *c, FILE *f)
{
	fprintf(f, "# trl-hpc %s resolved configuration", TRL_VERSION_STRING);
	if (c->source[0]) {
		fputs(" (from ", f);
		for (const char *s = c->source; *s; s++)
			fputc((unsigned char)*s < 0x20 ? '?' : *s, f);
		fputc(')', f);
	}
	fputc('\n', f);
	int in_model = 0;
	for (size_t i = 0; i < NKEYS; i++) {
		const Key *k = &keys[i];
		const char *name = k->name;
		if (is_model_key(name)) {
			if (!in_model)
				fputs("model:\n", f);
			in_model = 1;
			fputs("  ", f);
			name += MODEL_PREFIX_LEN;
		}
		fprintf(f, "%s: ", name);
		write_value(f, k, c);
		fputc('\n', f);
	}
}

static const char *type_name(const Key *k)
{
	static const char *const names[] = {
	    [K_INT] = "int",       [K_LONG] = "int",  [K_DOUBLE] = "float",
	    [K_FLOAT] = "float",   [K_BOOL] = "bool", [K_TRIBOOL] = "bool or null",
	    [K_STRING] = "string", [K_ENUM] = "enum"};
	return names[k->type];
}

/* Prints text wrapped to 80 columns, every line indented by indent spaces. */
static void print_wrapped(FILE *f, const char *text, int indent)
{
	const int width = 80;
	int col = 0;
	while (*text) {
		size_t word = strcspn(text, " ");
		if (col > indent && col + 1 + (int)word > width) {
			fputc('\n', f);
			col = 0;
		}
		if (col == 0)
			col = fprintf(f, "%*s", indent, "");
		else
			col += fprintf(f, " ");
		col += fprintf(f, "%.*s", (int)word, text);
		text += word;
		while (*text == ' ')
			text++;
	}
	fputc('\n', f);
}

void config_print_help(FILE *f)
{
	fputs(
	    "usage: trl-hpc [validate] input.yaml [--key value ...]\n"
	    "\n"
	    "Post-trains a language model the way Hugging Face TRL does, on CPU nodes "
	    "with "
	    "MPI.\n"
	    "\n"
	    "commands:\n"
	    "  (none)     train with the settings in input.yaml (the default)\n"
	    "  validate   check input.yaml and the overrides, print the resolved\n"
	    "             configuration as YAML and exit\n"
	    "\n"
	    "Every key below can be set in input.yaml and overridden on the command "
	    "line\n"
	    "with --key value or --key=value; the command line wins. Model keys go in a\n"
	    "`model:` block in the YAML file and are written --model.<key> on the "
	    "command\n"
	    "line.\n",
	    f);
	for (size_t i = 0; i < NKEYS; i++) {
		const Key *k = &keys[i];
		char range[256], line[512];
		if (k->group)
			fprintf(f, "\n%s:\n", k->group);
		if (k->type == K_ENUM) {
			choices_text(k, range, sizeof range);
			snprintf(line, sizeof line, "--%s {%s} (default %s)", k->name,
			         range, k->def);
		} else {
			range_text(k, range, sizeof range);
			snprintf(line, sizeof line, "--%s %s (default %s%s%s)", k->name,
			         type_name(k), k->def[0] ? k->def : "\"\"",
			         range[0] ? "; " : "", range);
		}
		fprintf(f, "  %s\n", line);
		print_wrapped(f, k->help, 6);
	}
}

/* Escapes what Markdown would read as table cells, emphasis or HTML. */
static void md_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else if (*s == '|' || *s == '*')
			fprintf(f, "\\%c", *s);
		else
			fputc(*s, f);
	}
}

void config_print_markdown(FILE *f)
{
	fputs("| key | type | default | range/choices | description |\n"
	      "|---|---|---|---|---|\n",
	      f);
	for (size_t i = 0; i < NKEYS; i++) {
		const Key *k = &keys[i];
		char range[256];
		if (k->type == K_ENUM) {
			size_t n = 0;
			range[0] = '\0';
			for (const char *const *ch = k->choices; *ch && n < sizeof range;
			     ch++)
				n += (size_t)snprintf(range + n, sizeof range - n,
				                      "%s`%s`",
				                      ch == k->choices ? "" : ", ", *ch);
		} else if (k->type == K_STRING) {
			snprintf(range, sizeof range, "at most %zu characters",
			         k->size - 1);
		} else if (k->type == K_BOOL || k->type == K_TRIBOOL) {
			snprintf(range, sizeof range, "`true`, `false`%s",
			         k->type == K_TRIBOOL ? ", `null`" : "");
		} else {
			range_text(k, range, sizeof range);
		}
		fprintf(f, "| `%s` | %s | `%s` | %s | ", k->name, type_name(k),
		        k->def[0] ? k->def : "\"\"", range[0] ? range : "any");
		md_escaped(f, k->help);
		fputs(" |\n", f);
	}
}
