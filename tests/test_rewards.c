/* test_rewards.c - the built-in reward functions against TRL's behaviour and the
 * reward_command protocol against real child processes (shell and python3
 * programs, inputs/reward_example.py): both answer modes, nulls, crashes,
 * garbage, timeouts, too many answers, a batch too large for the pipes, and
 * that stopping reaps the program. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "rewards.h"

/* ---------------------------------------------------------------- accuracy */

/* Strings inline: Criterion runs each case in a fresh process, where pointers
 * into the parent's image need not be valid. */
typedef struct AccCase {
	char completion[64], solution[64];
	double want; /* NaN: not applicable */
} AccCase;

static AccCase acc_cases[] = {
    /* \boxed{}: the last one wins, nested braces balance. */
    {"so the answer is \\boxed{12}.", "12", 1},
    {"\\boxed{11} no wait, \\boxed{12}", "12", 1},
    {"\\boxed{12} then I say 13", "12", 1},
    {"\\boxed{\\frac{1}{2}}", "1/2", 1},
    {"\\boxed{\\frac{1}{2}}", "0.5", 1},
    {"\\boxed{\\frac{1}{3}}", "0.5", 0},
    {"\\boxed{ {12} }", "{12}", 1},
    {"\\boxed{7} and an unclosed \\boxed{8", "7", 1},
    /* "####", GSM8K style, on either side. */
    {"3 + 4 = 7\n#### 7", "7", 1},
    {"#### 8\nmore 9", "8", 1},
    {"#### 1,000", "1000", 1},
    {"The total is 72.", "Natalia sold 48/2 = 24 clips.\n#### 72", 1},
    {"The total is 71.", "Natalia sold 48/2 = 24 clips.\n#### 72", 0},
    /* The last number. */
    {"15-3=12", "12", 1},
    {"15-3=12", "3", 0},
    {"I think 5, then 6", "6", 1},
    {"I think 5, then 6", "5", 0},
    {"it is -5", "-5", 1},
    {"it is -5", "5", 0},
    {"x=-5", "-5", 1},
    {"about 3.25 m", "3.25", 1},
    {"about 3.25 m", "3.2", 0},
    {"exactly 1,234,567 items", "1234567", 1},
    {"three quarters: 3/4", "0.75", 1},
    /* Normalisation: leading +, trailing .0, commas, trailing period. */
    {"\\boxed{+5}", "5", 1},
    {"\\boxed{1000.0}", "1,000", 1},
    {"\\boxed{1000.}", "1000", 1},
    {"\\boxed{-0.50}", "-1/2", 1},
    {"\\boxed{12}", "12.0000001", 0},
    {"\\boxed{1/3}", "0.333333333333", 1}, /* within the 1e-9 tolerance */
    {"\\boxed{1/0}", "1/0", 1},            /* not a number: compared as text */
    /* Strings: trimmed, one trailing period dropped, else exact. */
    {"\\boxed{ Paris. }", "Paris", 1},
    {"\\boxed{paris}", "Paris", 0},
    {"\\boxed{x^2}", " x^2 ", 1},
    {"yes", "yes.", 1},
    {"", "0", 0},
    /* No solution: not applicable. */
    {"\\boxed{1}", "", NAN},
    {"\\boxed{1}", " \n ", NAN},
};

ParameterizedTestParameters(rewards, accuracy)
{
	return cr_make_param_array(AccCase, acc_cases,
	                           sizeof acc_cases / sizeof *acc_cases);
}

ParameterizedTest(AccCase *c, rewards, accuracy)
{
	double got = reward_accuracy(c->completion, c->solution);
	if (isnan(c->want))
		cr_assert(isnan(got), "'%s' vs '%s': got %g, want NaN", c->completion,
		          c->solution, got);
	else
		cr_assert_eq(got, c->want, "'%s' vs '%s': got %g, want %g", c->completion,
		             c->solution, got, c->want);
}

Test(rewards, accuracy_null_completion_is_zero)
{
	cr_assert_eq(reward_accuracy(NULL, "1"), 0.0);
	cr_assert(isnan(reward_accuracy("1", NULL)));
}

/* ---------------------------------------------------------------- format */

static double fmt(RewardRegex *r, const char *s)
{
	return reward_format(r, s, strlen(s));
}

Test(rewards, think_format_preset)
{
	RewardRegex r;
	TrlErr err = {0};
	cr_assert_eq(reward_regex_init(&r, reward_think_format_pattern, &err), 0, "%s",
	             err.msg);
	/* TRL's docstring examples. */
	cr_assert_eq(
	    fmt(&r, "<think>\nThis is my reasoning.\n</think>\nThis is my answer."), 1);
	cr_assert_eq(fmt(&r, "<think>\nThis is my reasoning.\nThis is my answer."), 0);
	cr_assert_eq(fmt(&r, "<think></think>"), 1);
	cr_assert_eq(fmt(&r, " <think>a</think>b"), 0); /* anchored at the start */
	cr_assert_eq(fmt(&r, "<think>a</think><think>b</think>"), 0);
	cr_assert_eq(fmt(&r, "<think>a<think>b</think>"), 0);
	cr_assert_eq(fmt(&r, "<think>a</think>\n\nline\nline"), 1); /* DOTALL */
	/* A byte that is not UTF-8 still matches '.' (as U+FFFD). */
	cr_assert_eq(fmt(&r, "<think>\xff\xe2\x82</think>ok"), 1);
	/* len bounds the text: "<think>a</think>" cut before the closing tag. */
	cr_assert_eq(reward_format(&r, "<think>a</think>", 9), 0);
	reward_regex_free(&r);
	reward_regex_free(&r); /* safe twice */
}

Test(rewards, custom_format_pattern)
{
	RewardRegex r;
	TrlErr err = {0};
	cr_assert_eq(reward_regex_init(&r, "<answer>\\d+</answer>", &err), 0, "%s",
	             err.msg);
	cr_assert_eq(fmt(&r, "<answer>12</answer>"), 1);
	cr_assert_eq(fmt(&r, "<answer>12</answer> and more"), 1); /* like re.match */
	cr_assert_eq(fmt(&r, "so <answer>12</answer>"), 0);
	cr_assert_eq(fmt(&r, "<answer>twelve</answer>"), 0);
	cr_assert_eq(fmt(&r, "<answer>\xd9\xa3</answer>"),
	             1); /* \d is Unicode, as in Python */
	reward_regex_free(&r);

	cr_assert_eq(reward_regex_init(&r, "^a.b$", &err), 0, "%s", err.msg);
	cr_assert_eq(fmt(&r, "a\nb"), 1);    /* DOTALL */
	cr_assert_eq(fmt(&r, "a\nb\nc"), 0); /* no MULTILINE: $ is the end */
	cr_assert_eq(fmt(&r, "a\xc3\xa9"
	                     "b"),
	             1); /* '.' is one code point */
	reward_regex_free(&r);
}

Test(rewards, bad_format_pattern_is_an_error)
{
	RewardRegex r;
	TrlErr err = {0};
	cr_assert_lt(reward_regex_init(&r, "<answer>(\\d+</answer>", &err), 0);
	cr_assert(strstr(err.msg, "<answer>(\\d+</answer>"), "%s", err.msg);
	cr_assert(strstr(err.msg, "does not compile") && strstr(err.msg, "offset"), "%s",
	          err.msg);
	reward_regex_free(&r); /* init leaves it zeroed */
}

/* ---------------------------------------------------------------- soft overlong */

Test(rewards, soft_overlong_boundaries)
{
	/* TRL's docstring: max 100, cache 20, 90 tokens -> -0.5. */
	cr_assert_eq(reward_soft_overlong(90, 100, 20), -0.5);
	cr_assert_eq(reward_soft_overlong(0, 100, 20), 0.0);
	cr_assert_eq(reward_soft_overlong(80, 100, 20), 0.0);
	cr_assert_float_eq(reward_soft_overlong(81, 100, 20), -0.05, 1e-15);
	cr_assert_float_eq(reward_soft_overlong(99, 100, 20), -0.95, 1e-15);
	cr_assert_eq(reward_soft_overlong(100, 100, 20), -1.0);
	cr_assert_eq(reward_soft_overlong(101, 100, 20), -1.0);
	/* cache 0: no soft zone. */
	cr_assert_eq(reward_soft_overlong(100, 100, 0), 0.0);
	cr_assert_eq(reward_soft_overlong(101, 100, 0), -1.0);
}

/* ---------------------------------------------------------------- requests */

static JsonValue *parse_line(const char *line)
{
	cr_assert_not_null(line);
	cr_assert_null(strchr(line, '\n'), "a request must be one line: %s", line);
	JsonValue *v;
	JsonError je;
	cr_assert_eq(json_parse(line, strlen(line), &v, &je), 0, "%s at column %d: %s",
	             je.msg, je.column, line);
	return v;
}

Test(rewards, request_json_round_trip)
{
	/* Quote, backslash, newline, tab, control bytes, a NUL, DEL, an invalid
	 * byte, a truncated three-byte character and a valid one. */
	static const char comp[] =
	    "a\"b\\c\nd\te\x01\x1f\0f\x7f\xff|\xe2\x82|\xe2\x82\xac";
	static const char want[] =
	    "a\"b\\c\nd\te\x01\x1f\0f\x7f\xef\xbf\xbd|\xef\xbf\xbd|"
	    "\xe2\x82\xac";
	int32_t ids[3] = {5, -1, 70000};
	const char *extra =
	    "{\n  \"solution\": \"12\",\n  \"meta\": {\"k\": [1, 2]}\n}\n";
	char *line =
	    reward_request_json("15-3=\xc3", comp, sizeof comp - 1, ids, 3, 2, 8, extra);
	JsonValue *v = parse_line(line);
	cr_assert_eq(v->type, JSON_OBJECT);
	cr_assert_str_eq(json_str(json_get(v, "prompt")), "15-3=\xef\xbf\xbd");
	const JsonValue *c = json_get(v, "completion");
	cr_assert_eq(c->len, sizeof want - 1);
	cr_assert_eq(memcmp(c->str, want, c->len), 0, "completion: %s", line);
	const JsonValue *a = json_get(v, "completion_ids");
	cr_assert_eq(a->len, 3);
	int64_t x;
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(json_int(json_at(a, (size_t)i), &x), 0);
		cr_assert_eq(x, ids[i]);
	}
	cr_assert_eq(json_int(json_get(v, "index"), &x), 0);
	cr_assert_eq(x, 2);
	cr_assert_eq(json_int(json_get(v, "batch_size"), &x), 0);
	cr_assert_eq(x, 8);
	cr_assert_str_eq(json_str(json_get(v, "solution")), "12");
	cr_assert_eq(json_get(json_get(v, "meta"), "k")->len, 2);
	cr_assert_eq(v->len, 7);
	json_free(v);
	free(line);
}

Test(rewards, request_json_without_extras)
{
	const char *extras[3] = {"{}", " { } ", NULL};
	for (int i = 0; i < 3; i++) {
		char *line = reward_request_json("p", "c", 1, NULL, 0, 0, 1, extras[i]);
		JsonValue *v = parse_line(line);
		cr_assert_eq(v->len, 5, "%s", line);
		cr_assert_eq(json_get(v, "completion_ids")->len, 0);
		json_free(v);
		free(line);
	}
}

/* ---------------------------------------------------------------- the program */

/* inputs/reward_example.py from the source tree. */
static const char *example_path(void)
{
	static char path[4096];
	const char *dirs[4] = {getenv("srcdir"), getenv("top_srcdir"), ".", ".."};
	for (int i = 0; i < 4; i++) {
		if (!dirs[i])
			continue;
		snprintf(path, sizeof path, "%s/inputs/reward_example.py", dirs[i]);
		if (access(path, R_OK) == 0)
			return path;
	}
	cr_assert_fail("inputs/reward_example.py not found (set srcdir)");
	return NULL;
}

/* n requests; solutions[i] NULL leaves the solution column out. */
static char **make_requests(int n, const char *const *completions,
                            const char *const *solutions)
{
	char **r = calloc((size_t)n, sizeof *r);
	for (int i = 0; i < n; i++) {
		char extra[256] = "{}";
		if (solutions && solutions[i])
			snprintf(extra, sizeof extra, "{\"solution\": \"%s\"}",
			         solutions[i]);
		const char *c = completions ? completions[i] : "x";
		r[i] = reward_request_json("q", c, strlen(c), NULL, 0, i, n, extra);
		cr_assert_not_null(r[i]);
	}
	return r;
}

static void free_requests(char **r, int n)
{
	for (int i = 0; i < n; i++)
		free(r[i]);
	free(r);
}

static void start(RewardProc *p, const char *cmd, double timeout_s)
{
	TrlErr err = {0};
	cr_assert_eq(reward_proc_start(p, cmd, timeout_s, &err), 0, "%s", err.msg);
	cr_assert_gt(p->pid, 0);
}

/* Runs one batch of n plain requests that must fail; returns the message. */
static const char *score_fails(const char *cmd, int n, double timeout_s, TrlErr *err)
{
	RewardProc p;
	start(&p, cmd, timeout_s);
	char **req = make_requests(n, NULL, NULL);
	double rw[8];
	cr_assert_leq(n, 8);
	int rc = reward_proc_score(&p, n, req, rw, err);
	cr_assert_lt(rc, 0, "'%s' should have failed", cmd);
	cr_assert_eq(p.pid, 0, "a failed program is stopped");
	/* Out of step now: a later batch is refused rather than misread. */
	TrlErr again = {0};
	cr_assert_lt(reward_proc_score(&p, n, req, rw, &again), 0);
	cr_assert(strstr(again.msg, "is not running"), "%s", again.msg);
	reward_proc_stop(&p);
	free_requests(req, n);
	return err->msg;
}

#define PY_PER_LINE                                                                      \
	"python3 -c 'import sys, json\n"                                                 \
	"for l in sys.stdin:\n"                                                          \
	"    print(json.dumps({\"reward\": json.loads(l)[\"index\"] * 1.5}), "           \
	"flush=True)'"

Test(rewards, program_per_line_mode)
{
	RewardProc p;
	start(&p, PY_PER_LINE, 30);
	char **req = make_requests(5, NULL, NULL);
	double rw[5];
	TrlErr err = {0};
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 5; i++)
			rw[i] = -7;
		cr_assert_eq(reward_proc_score(&p, 5, req, rw, &err), 0, "%s", err.msg);
		for (int i = 0; i < 5; i++)
			cr_assert_eq(rw[i], 1.5 * i, "round %d: rewards[%d] = %g", round,
			             i, rw[i]);
	}
	cr_assert_eq(p.line_no, 10);
	reward_proc_stop(&p);
	free_requests(req, 5);
}

Test(rewards, example_program_batch_and_per_line)
{
	static const char *const comp[6] = {"12", "13", " 7 apples", "none", "42", "-3"};
	static const char *const sol[6] = {"12", "12", "7", "1", NULL, "-3"};
	static const double want[6] = {1, 0, 1, 0, NAN, 1};
	char **req = make_requests(6, comp, sol);
	for (int mode = 0; mode < 2; mode++) {
		char cmd[4200];
		snprintf(cmd, sizeof cmd, "python3 '%s'%s", example_path(),
		         mode ? " --per-line" : "");
		RewardProc p;
		start(&p, cmd, 30);
		double rw[6];
		TrlErr err = {0};
		for (int round = 0; round < 2; round++) {
			cr_assert_eq(reward_proc_score(&p, 6, req, rw, &err), 0, "%s",
			             err.msg);
			for (int i = 0; i < 6; i++) {
				if (isnan(want[i]))
					cr_assert(isnan(rw[i]),
					          "mode %d: rewards[%d] = %g", mode, i,
					          rw[i]);
				else
					cr_assert_eq(rw[i], want[i],
					             "mode %d: rewards[%d] = %g", mode, i,
					             rw[i]);
			}
		}
		/* Batch mode answers each batch in one line, per-line mode in six. */
		cr_assert_eq(p.line_no, mode ? 12 : 2, "mode %d: %ld lines", mode,
		             p.line_no);
		reward_proc_stop(&p);
	}
	free_requests(req, 6);
}

Test(rewards, program_null_and_mixed_answers)
{
	RewardProc p;
	/* One batch of 4: a null, then an array with a null for the last three,
	 * with a blank line in between (ignored). */
	start(&p,
	      "read a; echo '{\"reward\": null}'; read b; read c; read d; echo; "
	      "echo '{\"rewards\": [2, null, -0.25], \"note\": \"ok\"}'; cat > /dev/null",
	      30);
	char **req = make_requests(4, NULL, NULL);
	double rw[4] = {0, 0, 0, 0};
	TrlErr err = {0};
	cr_assert_eq(reward_proc_score(&p, 4, req, rw, &err), 0, "%s", err.msg);
	cr_assert(isnan(rw[0]));
	cr_assert_eq(rw[1], 2);
	cr_assert(isnan(rw[2]));
	cr_assert_eq(rw[3], -0.25);
	reward_proc_stop(&p);
	free_requests(req, 4);
}

Test(rewards, program_exit_status)
{
	TrlErr err = {0};
	const char *m =
	    score_fails("read l; echo '{\"reward\": 1}'; exit 3", 3, 30, &err);
	cr_assert(strstr(m, "exited with status 3 after 1 responses"), "%s", m);
	cr_assert(strstr(m, "reward_command 'read l;"), "%s", m);
}

Test(rewards, program_exit_before_reading_large_batch_no_sigpipe)
{
	/* It exits at once while 4 MB are still to be written: writes fail with
	 * EPIPE, and SIGPIPE must not kill this test process. */
	RewardProc p;
	start(&p, "exit 3", 30);
	int n = 2000;
	char *big = malloc(2049);
	memset(big, 'z', 2048);
	big[2048] = 0;
	char **req = calloc((size_t)n, sizeof *req);
	for (int i = 0; i < n; i++)
		req[i] = reward_request_json("q", big, 2048, NULL, 0, i, n, "{}");
	double *rw = calloc((size_t)n, sizeof *rw);
	TrlErr err = {0};
	cr_assert_lt(reward_proc_score(&p, n, req, rw, &err), 0);
	cr_assert(strstr(err.msg, "exited with status 3 after 0 responses"), "%s",
	          err.msg);
	reward_proc_stop(&p);
	free_requests(req, n);
	free(rw);
	free(big);
}

Test(rewards, program_killed_by_signal)
{
	TrlErr err = {0};
	const char *m = score_fails("read l; kill -9 $$", 2, 30, &err);
	cr_assert(strstr(m, "was killed by signal 9"), "%s", m);
}

Test(rewards, program_not_found)
{
	TrlErr err = {0};
	const char *m = score_fails("/nonexistent/reward-program", 1, 30, &err);
	cr_assert(strstr(m, "exited with status 127"), "%s", m);
}

Test(rewards, program_prints_garbage)
{
	TrlErr err = {0};
	const char *m =
	    score_fails("read l; echo '{\"reward\": 1}'; echo hello world", 2, 30, &err);
	cr_assert(strstr(m, "response line 2 is not JSON"), "%s", m);
	cr_assert(strstr(m, "hello world"), "%s", m);
}

Test(rewards, program_answer_without_reward)
{
	TrlErr err = {0};
	const char *m =
	    score_fails("read l; echo '{\"score\": 1}'; cat > /dev/null", 1, 30, &err);
	cr_assert(strstr(m, "response line 1 has neither reward nor rewards"), "%s", m);
}

Test(rewards, program_reward_not_a_number)
{
	TrlErr err = {0};
	const char *m = score_fails(
	    "read l; echo '{\"reward\": \"high\"}'; cat > /dev/null", 1, 30, &err);
	cr_assert(strstr(m, "reward is a string, not a number or null"), "%s", m);
	m = score_fails("read l; echo '{\"rewards\": [1, true]}'; cat > /dev/null", 2, 30,
	                &err);
	cr_assert(strstr(m, "rewards[1] is a boolean"), "%s", m);
	m = score_fails("read l; echo '[1]'; cat > /dev/null", 1, 30, &err);
	cr_assert(strstr(m, "is not a JSON object"), "%s", m);
}

Test(rewards, program_too_many_rewards)
{
	TrlErr err = {0};
	const char *m = score_fails("read a; read b; read c; echo '{\"rewards\": [1, 2, "
	                            "3, 4, 5]}'; cat > /dev/null",
	                            3, 30, &err);
	cr_assert(strstr(m, "rewards has 5 values but only 3 requests are pending"), "%s",
	          m);
	/* Two answers to one request, in one write. */
	m = score_fails(
	    "read a; printf '{\"reward\": 1}\\n{\"reward\": 2}\\n'; cat > /dev/null", 1,
	    30, &err);
	cr_assert(strstr(m, "response line 2 answers a request that was not sent"), "%s",
	          m);
}

Test(rewards, program_timeout)
{
	TrlErr err = {0};
	double t0 = trl_now();
	const char *m = score_fails("read l; sleep 30", 2, 1.0, &err);
	double dt = trl_now() - t0;
	cr_assert_lt(dt, 4.0, "took %.1f s", dt);
	cr_assert_geq(dt, 0.9, "took %.1f s", dt);
	cr_assert(strstr(m, "gave no answer within 1 s (response line 1"), "%s", m);
}

Test(rewards, program_large_batch_does_not_deadlock)
{
	/* 2000 requests of ~2 KB each way: neither side can buffer it all, so
	 * writing the whole batch before reading would hang (until the timeout). */
	RewardProc p;
	start(&p,
	      "python3 -c 'import sys\n"
	      "for l in sys.stdin:\n"
	      "    print(\"{\\\"reward\\\": %d}\" % len(l) + \" \" * 2000, flush=True)'",
	      20);
	int n = 2000;
	char **req = calloc((size_t)n, sizeof *req);
	char big[2100];
	for (int i = 0; i < n; i++) {
		int k = 1900 + i % 150;
		memset(big, 'a' + i % 26, (size_t)k);
		req[i] = reward_request_json("q", big, (size_t)k, NULL, 0, i, n, "{}");
	}
	double *rw = calloc((size_t)n, sizeof *rw);
	TrlErr err = {0};
	double t0 = trl_now();
	cr_assert_eq(reward_proc_score(&p, n, req, rw, &err), 0, "%s", err.msg);
	cr_assert_lt(trl_now() - t0, 15.0);
	for (int i = 0; i < n; i++)
		cr_assert_eq(rw[i], (double)strlen(req[i]) + 1, "rewards[%d] = %g", i,
		             rw[i]);
	reward_proc_stop(&p);
	free_requests(req, n);
	free(rw);
}

static int gone(pid_t pid)
{
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return 1;
	/* A zombie of someone else's (an orphan awaiting init) is gone too. */
	char path[64], state = 0;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 1;
	int ok = fscanf(f, "%*d %*s %c", &state) == 1;
	fclose(f);
	return ok && state == 'Z';
}

Test(rewards, stop_reaps_the_program)
{
	/* A polite program: exits on EOF. */
	RewardProc p;
	start(&p, "cat > /dev/null", 30);
	pid_t pid = p.pid;
	double t0 = trl_now();
	reward_proc_stop(&p);
	cr_assert_lt(trl_now() - t0, 2.0);
	cr_assert_eq(p.pid, 0);
	cr_assert_eq(waitpid(pid, NULL, WNOHANG), -1, "pid %d was not reaped", (int)pid);
	cr_assert_eq(errno, ECHILD);
	cr_assert(gone(pid));
	reward_proc_stop(&p); /* a second stop is a no-op */
}

Test(rewards, stop_kills_a_program_that_ignores_eof)
{
	char tmp[] = "/tmp/test_rewards_XXXXXX";
	int fd = mkstemp(tmp);
	cr_assert_geq(fd, 0);
	close(fd);
	char cmd[256];
	/* The shell waits on a background child that ignores stdin. */
	snprintf(cmd, sizeof cmd, "sleep 300 & echo $! > %s; wait", tmp);
	RewardProc p;
	start(&p, cmd, 1.0);
	pid_t pid = p.pid, child = 0;
	for (int i = 0; i < 400 && child <= 0; i++) {
		FILE *f = fopen(tmp, "r");
		if (f) {
			if (fscanf(f, "%d", &child) != 1)
				child = 0;
			fclose(f);
		}
		if (child <= 0)
			usleep(10000);
	}
	cr_assert_gt(child, 0, "the program did not start its child");
	double t0 = trl_now();
	reward_proc_stop(&p);
	double dt = trl_now() - t0;
	cr_assert(dt >= 0.9 && dt < 3.0, "stop took %.2f s, want its 1 s timeout", dt);
	cr_assert_eq(waitpid(pid, NULL, WNOHANG), -1);
	int dead = 0;
	for (int i = 0; i < 200 && !dead; i++) {
		dead = gone(child);
		if (!dead)
			usleep(10000);
	}
	cr_assert(dead, "the program's child %d survived stop", (int)child);
	unlink(tmp);
}

Test(rewards, zeroed_proc_is_safe)
{
	if (fcntl(0, F_GETFD) == -1)
		cr_assert_eq(open("/dev/null", O_RDONLY), 0);
	RewardProc p;
	memset(&p, 0, sizeof p);
	reward_proc_stop(&p); /* must not close fd 0 */
	cr_assert_neq(fcntl(0, F_GETFD), -1, "stdin was closed");
	TrlErr err = {0};
	double rw[1];
	char *req[1] = {"{}"};
	cr_assert_lt(reward_proc_score(&p, 1, req, rw, &err), 0);
}
