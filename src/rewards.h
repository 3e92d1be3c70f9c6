/* rewards.h - the reward functions of the online methods: TRL's built-in
 * ones (accuracy, format / think_format, soft overlong punishment) and a
 * user program that scores completions over JSON lines.
 *
 * A reward is a double; NaN means "not applicable to this completion" (TRL's
 * None), which the advantage computation treats as TRL does.
 *
 * The reward program (reward_command) is started once with /bin/sh -c CMD, in
 * its own process group, and kept for the run. For every completion it reads
 * one request line, a JSON object
 *     {"prompt": "...", "completion": "...", "completion_ids": [..],
 *      "index": i, "batch_size": n, <every extra column of the dataset row>}
 * and answers, in order, either one line {"reward": x} per request or one
 * line {"rewards": [x, ...]} for the next k pending requests (k >= 1, e.g. a
 * whole batch once it has read batch_size requests); x is a number or null,
 * other members of an answer are ignored, and so are blank lines (which still
 * count in the line numbers of messages). Anything else on stdout, answers to
 * requests not yet sent, an exit, or not answering the whole batch within
 * the timeout is an error naming the program and the offending line; the
 * program is then killed, since its later output could not be trusted. Its
 * stderr goes to ours. inputs/reward_example.py is an example.
 */
#ifndef TRL_REWARDS_H
#define TRL_REWARDS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "trl.h"

/* ---- built-in functions ----------------------------------------------------- */

/* accuracy: 1 when the completion's final answer equals the solution, else 0;
 * NaN when the solution is empty or blank (TRL's unparseable gold). The final
 * answer is the content of the last \boxed{...} whose braces balance (nested
 * braces allowed), else the rest of the line after the last "####", else the
 * last number in the completion, else the whole completion. A solution that
 * itself holds a \boxed{} or "####" (GSM8K's "... #### 72") is cut the same
 * way. Both sides compare as numbers when both parse as one ("1,000" = "1000"
 * = "1000.0", "+5" = "5", "1/2" = "\frac{1}{2}" = "0.5"; relative tolerance
 * 1e-9), else as strings with surrounding whitespace and a trailing period
 * removed. A number is an optional sign, digits with optional ",ddd" groups,
 * an optional ".digits", and an optional "/denominator"; a '-' right after a
 * letter, digit or closing bracket is an operator, so "15-3=12" ends in 12.
 * This is a plain-text stand-in for TRL's math_verify, not a LaTeX parser. */
double reward_accuracy(const char *completion, const char *solution);

/* The think_format preset: TRL's think_format_reward pattern (one
 * <think>...</think> block at the start, no second <think>). */
extern const char *const reward_think_format_pattern;

/* A compiled format pattern: 1 when the completion matches it from its first
 * byte, else 0 - Python's re.match(pattern, completion, re.DOTALL), as TRL's
 * format rewards use it. Anchored at the start only: "<a>\d+</a>" matches
 * "<a>1</a> more"; end the pattern with $ (end, or before a final newline) or
 * \z to require the whole completion. Compiled with PCRE2_DOTALL (. matches
 * newlines), UTF and UCP (. is a code point; \d, \w, \s are Unicode, as in
 * Python); not MULTILINE (TRL's think preset sets it, which makes no
 * difference to that pattern). Bytes of the completion that are not UTF-8
 * count as U+FFFD. One RewardRegex per thread: it holds the match data. */
typedef struct RewardRegex {
	void *code;  /* pcre2_code * */
	void *match; /* pcre2_match_data * */
} RewardRegex;
/* Compiles pattern; a syntax error (TRL_EINVAL) names the pattern and the
 * offset and leaves r zeroed. free is safe on a zeroed struct. */
int reward_regex_init(RewardRegex *r, const char *pattern, TrlErr *err);
double reward_format(RewardRegex *r, const char *completion, size_t len);
void reward_regex_free(RewardRegex *r);

/* TRL's get_soft_overlong_punishment(max_len, cache): 0 for a completion of
 * n tokens with n <= max_len - cache, (max_len - cache - n) / cache up to
 * max_len, -1 beyond. */
double reward_soft_overlong(int n, int max_len, int cache);

/* ---- the reward program ------------------------------------------------------- */

typedef struct RewardProc {
	pid_t pid;      /* 0: not running */
	int to_child;   /* its stdin (nonblocking); valid only while pid > 0 */
	int from_child; /* its stdout (nonblocking) */
	char *cmd;
	double timeout_s;
	long line_no; /* response lines read so far */
	char *buf;    /* pending output of the program */
	size_t len, cap;
} RewardProc;

/* Starts cmd (/bin/sh -c cmd) with pipes to its stdin and stdout (no other
 * descriptors of ours are inherited). timeout_s: how long one
 * reward_proc_score call may take before the program is declared stuck, and
 * how long reward_proc_stop waits; <= 0: scoring waits without limit and
 * stop waits 5 s. A command that does not exist shows at the first score (sh
 * exits with status 127). Release with reward_proc_stop, also after a failed
 * start or score. */
int reward_proc_start(RewardProc *p, const char *cmd, double timeout_s, TrlErr *err);

/* Scores n completions: requests[i] is the JSON text of request i (made with
 * reward_request_json, one line without '\n'); writes rewards[i] (NaN for
 * null). Writes and reads concurrently with poll(), so a program that
 * answers before reading the whole batch cannot deadlock; SIGPIPE is blocked
 * in the calling thread meanwhile, so a program that exits is an error, not
 * our death. On a crash, a timeout or malformed output returns an error
 * naming the program, the response line and what was wrong, and kills the
 * program (p stays valid for reward_proc_stop; later calls fail). */
int reward_proc_score(RewardProc *p, int n, char *const *requests, double *rewards,
                      TrlErr *err);

/* Closes its stdin, waits up to timeout_s for it to exit (draining its
 * stdout), then kills its process group with SIGKILL and reaps it; frees
 * what start allocated. Safe on a zeroed or already stopped struct. */
void reward_proc_stop(RewardProc *p);

/* One request: a malloc'ed NUL-terminated JSON object line (no newline) with
 * prompt, completion (UTF-8 text, escaped), completion_ids (n_ids), index,
 * batch_size and every member of extra (the JSON text of an object, "{}" or
 * NULL for none) appended as it is, newlines turned into spaces. Text that is
 * not valid UTF-8 gets U+FFFD for each ill-formed sequence, so the line is
 * always valid JSON. extra comes last: a column named like a fixed member
 * wins for a reader that keeps the last duplicate (Python's json). NULL when
 * out of memory; the caller frees the line. */
char *reward_request_json(const char *prompt, const char *completion, size_t comp_len,
                          const int32_t *ids, int n_ids, int index, int batch_size,
                          const char *extra);

#endif
