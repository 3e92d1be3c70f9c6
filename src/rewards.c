/* rewards.c - TRL's built-in reward functions and the reward_command protocol. */
#define _GNU_SOURCE /* pipe2, close_range, memmem */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "rewards.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pcre2.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

/* ---- text helpers -------------------------------------------------------------- */

typedef struct Span {
	const char *p;
	size_t n;
} Span;

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '_';
}

static Span span_trim(Span s)
{
	while (s.n && is_space(s.p[0]))
		s.p++, s.n--;
	while (s.n && is_space(s.p[s.n - 1]))
		s.n--;
	return s;
}

/* Trimmed, then one trailing period removed and trimmed again: "12. " -> "12". */
static Span span_normalize(Span s)
{
	s = span_trim(s);
	if (s.n && s.p[s.n - 1] == '.')
		s.n--;
	return span_trim(s);
}

static const char *span_find_last(Span s, const char *needle)
{
	size_t k = strlen(needle);
	const char *last = NULL;
	for (const char *q = s.p; q + k <= s.p + s.n;) {
		const char *hit = memmem(q, (size_t)(s.p + s.n - q), needle, k);
		if (!hit)
			break;
		last = hit;
		q = hit + 1;
	}
	return last;
}

/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 when the bytes there
 * are not one; *bad is then the length of the maximal ill-formed subpart (at
 * least 1), which becomes one U+FFFD, as Python's errors="replace" does. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end, size_t *bad)
{
	unsigned char c = p[0];
	size_t need;
	unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
	*bad = 1;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		need = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		need = 3;
		if (c == 0xE0)
			lo = 0xA0; /* no overlong forms */
		else if (c == 0xED)
			hi = 0x9F; /* no surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F; /* nothing above U+10FFFF */
	} else {
		return 0;
	}
	for (size_t i = 1; i < need; i++) {
		if (p + i >= end || p[i] < (i == 1 ? lo : 0x80) ||
		    p[i] > (i == 1 ? hi : 0xBF)) {
			*bad = i;
			return 0;
		}
	}
	return need;
}

static int utf8_is_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	size_t bad;
	while (p < end) {
		size_t k = utf8_seq(p, end, &bad);
		if (!k)
			return 0;
		p += k;
	}
	return 1;
}

/* Appends s[0..n) to b with every ill-formed UTF-8 subpart replaced by U+FFFD. */
static void utf8_sanitize(JsonBuf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
	size_t bad;
	while (p < end) {
		size_t k = utf8_seq(p, end, &bad);
		if (k) {
			p += k;
			continue;
		}
		json_buf_put(b, (const char *)run, (size_t)(p - run));
		json_buf_put(b, "\xEF\xBF\xBD", 3);
		p += bad;
		run = p;
	}
	json_buf_put(b, (const char *)run, (size_t)(p - run));
}

/* Appends s[0..n) as a JSON string that is valid UTF-8 whatever s holds. */
static void json_string_utf8(JsonBuf *b, const char *s, size_t n)
{
	if (utf8_is_valid(s, n)) {
		json_buf_string(b, s, n);
		return;
	}
	JsonBuf clean = {0};
	utf8_sanitize(&clean, s, n);
	if (clean.oom)
		b->oom = 1;
	else
		json_buf_string(b, clean.p ? clean.p : "", clean.len);
	json_buf_free(&clean);
}

/* ---- accuracy ------------------------------------------------------------------- */

/* The content of the last \boxed{...} whose braces balance, in *out. */
static int last_boxed(Span s, Span *out)
{
	static const char key[] = "\\boxed";
	int found = 0;
	const char *end = s.p + s.n;
	for (const char *q = s.p; q < end;) {
		const char *hit = memmem(q, (size_t)(end - q), key, sizeof key - 1);
		if (!hit)
			break;
		const char *c = hit + sizeof key - 1;
		q = c;
		while (c < end && is_space(*c))
			c++;
		if (c >= end || *c != '{')
			continue;
		int depth = 0;
		const char *open = c;
		for (; c < end; c++) {
			if (*c == '{')
				depth++;
			else if (*c == '}' && --depth == 0)
				break;
		}
		if (c < end) {
			out->p = open + 1;
			out->n = (size_t)(c - open - 1);
			found = 1;
			q = c + 1;
		}
	}
	return found;
}

/* The rest of the line after the last "####", trimmed; fails when empty. */
static int after_hashes(Span s, Span *out)
{
	const char *h = span_find_last(s, "####");
	if (!h)
		return 0;
	Span r = {h + 4, (size_t)(s.p + s.n - h - 4)};
	const char *nl = memchr(r.p, '\n', r.n);
	if (nl)
		r.n = (size_t)(nl - r.p);
	r = span_trim(r);
	if (!r.n)
		return 0;
	*out = r;
	return 1;
}

/* Length of an unsigned decimal at p: digits with optional ",ddd" thousands
 * groups and an optional ".digits" fraction, or ".digits" alone. */
static size_t scan_decimal(const char *p, const char *end)
{
	const char *q = p;
	while (q < end && is_digit(*q))
		q++;
	if (q > p) {
		while (end - q >= 4 && q[0] == ',' && is_digit(q[1]) && is_digit(q[2]) &&
		       is_digit(q[3]) && (end - q == 4 || !is_digit(q[4])))
			q += 4;
	}
	if (q + 1 < end && *q == '.' && is_digit(q[1])) {
		q++;
		while (q < end && is_digit(*q))
			q++;
	}
	return (size_t)(q - p);
}

/* The last number of the text: an optional sign (when not preceded by a letter,
 * digit or closing bracket, so "15-3" yields 3), a decimal as scan_decimal
 * reads it, and an optional "/digits" denominator. */
static int last_number(Span s, Span *out)
{
	const char *end = s.p + s.n;
	int found = 0;
	for (const char *q = s.p; q < end;) {
		if (!is_digit(*q)) {
			q++;
			continue;
		}
		const char *start = q;
		q += scan_decimal(q, end);
		if (q + 1 < end && *q == '/' && is_digit(q[1])) {
			q++;
			while (q < end && is_digit(*q))
				q++;
		}
		if (start > s.p && (start[-1] == '-' || start[-1] == '+')) {
			char before = start - 1 > s.p ? start[-2] : ' ';
			if (!is_alnum(before) && before != ')' && before != ']' &&
			    before != '}')
				start--;
		}
		out->p = start;
		out->n = (size_t)(q - start);
		found = 1;
	}
	return found;
}

/* An unsigned decimal that is the whole of s, commas dropped. */
static int parse_decimal(Span s, double *v)
{
	if (!s.n || s.n > 64 || scan_decimal(s.p, s.p + s.n) != s.n)
		return 0;
	char tmp[72];
	size_t k = 0;
	for (size_t i = 0; i < s.n; i++)
		if (s.p[i] != ',')
			tmp[k++] = s.p[i];
	tmp[k] = 0;
	char *e;
	*v = strtod(tmp, &e);
	return *e == 0;
}

/* s is exactly "{...}" (one brace group, balanced); *in is its content. */
static int brace_group(Span s, Span *in)
{
	if (s.n < 2 || s.p[0] != '{')
		return 0;
	int depth = 0;
	for (size_t i = 0; i < s.n; i++) {
		if (s.p[i] == '{')
			depth++;
		else if (s.p[i] == '}' && --depth == 0) {
			if (i != s.n - 1)
				return 0;
			in->p = s.p + 1;
			in->n = s.n - 2;
			return 1;
		}
	}
	return 0;
}

/* s (already normalized) as a number: [+-] then a decimal ("1,000", "3.50",
 * ".5"), a fraction a/b of decimals, or \frac{a}{b} (also \dfrac, \tfrac). */
static int parse_number(Span s, double *v)
{
	double sign = 1;
	if (s.n && (s.p[0] == '+' || s.p[0] == '-')) {
		sign = s.p[0] == '-' ? -1 : 1;
		s.p++, s.n--;
		s = span_trim(s);
	}
	static const char *const fracs[] = {"\\frac", "\\dfrac", "\\tfrac"};
	for (int i = 0; i < 3; i++) {
		size_t k = strlen(fracs[i]);
		if (s.n <= k || memcmp(s.p, fracs[i], k) != 0)
			continue;
		Span rest = {s.p + k, s.n - k}, num, den;
		/* Split "{a}{b}" at the end of the first group. */
		int depth = 0;
		size_t j = 0;
		for (; j < rest.n; j++) {
			if (rest.p[j] == '{')
				depth++;
			else if (rest.p[j] == '}' && --depth == 0)
				break;
		}
		if (j >= rest.n)
			return 0;
		Span a = {rest.p, j + 1}, b = {rest.p + j + 1, rest.n - j - 1};
		double x, y;
		if (!brace_group(a, &num) || !brace_group(b, &den) ||
		    !parse_decimal(span_trim(num), &x) ||
		    !parse_decimal(span_trim(den), &y) || y == 0)
			return 0;
		*v = sign * x / y;
		return 1;
	}
	const char *slash = memchr(s.p, '/', s.n);
	if (slash) {
		double x, y;
		Span a = span_trim((Span){s.p, (size_t)(slash - s.p)});
		Span b = span_trim((Span){slash + 1, (size_t)(s.p + s.n - slash - 1)});
		if (!parse_decimal(a, &x) || !parse_decimal(b, &y) || y == 0)
			return 0;
		*v = sign * x / y;
		return 1;
	}
	if (!parse_decimal(s, v))
		return 0;
	*v *= sign;
	return 1;
}

/* Relative 1e-9 (with an absolute floor for zero): equal up to the rounding
 * of the decimal text, while 0.333 and 1/3 stay different. */
static int numbers_equal(double a, double b)
{
	return fabs(a - b) <= 1e-9 * fmax(1.0, fmax(fabs(a), fabs(b)));
}

static int answers_equal(Span a, Span b)
{
	a = span_normalize(a);
	b = span_normalize(b);
	double x, y;
	if (parse_number(a, &x) && parse_number(b, &y))
		return numbers_equal(x, y);
	return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

double reward_accuracy(const char *completion, const char *solution)
{
	Span sol =
	    span_trim((Span){solution ? solution : "", solution ? strlen(solution) : 0});
	if (!sol.n)
		return NAN;
	/* A solution may carry its own marker (GSM8K answers end "#### 72"). */
	Span gold = sol;
	if (!last_boxed(sol, &gold) && !after_hashes(sol, &gold))
		gold = sol;

	Span c = {completion ? completion : "", completion ? strlen(completion) : 0}, ans;
	if (!last_boxed(c, &ans) && !after_hashes(c, &ans) && !last_number(c, &ans))
		ans = c;
	return answers_equal(ans, gold) ? 1.0 : 0.0;
}

/* ---- format ---------------------------------------------------------------------- */

const char *const reward_think_format_pattern = "^<think>(?!.*<think>)(.*?)</think>.*$";

int reward_regex_init(RewardRegex *r, const char *pattern, TrlErr *err)
{
	memset(r, 0, sizeof *r);
	int ecode;
	PCRE2_SIZE eoff;
	/* UTF + UCP: '.' is one code point and \d, \w, \s are Unicode classes, as in
	 * Python's re on str. MATCH_INVALID_UTF keeps a stray byte from being an
	 * error should sanitizing (below) ever be skipped. */
	pcre2_code *code =
	    pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
	                  PCRE2_DOTALL | PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
	                  &ecode, &eoff, NULL);
	if (!code) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ecode, msg, sizeof msg);
		return trl_errf(
		    err, TRL_EINVAL,
		    "format_pattern '%.300s' does not compile: %s at offset %zu", pattern,
		    (const char *)msg, (size_t)eoff);
	}
	pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
	if (!md) {
		pcre2_code_free(code);
		return trl_errf(err, TRL_ENOMEM,
		                "out of memory compiling format_pattern");
	}
	r->code = code;
	r->match = md;
	return 0;
}

double reward_format(RewardRegex *r, const char *completion, size_t len)
{
	/* A completion cut inside a character gets U+FFFD there, as the
	 * tokenizer's decode gives TRL, so that '.' still matches it. */
	JsonBuf clean = {0};
	const char *s = completion ? completion : "";
	if (!completion)
		len = 0;
	if (!utf8_is_valid(s, len)) {
		utf8_sanitize(&clean, s, len);
		if (!clean.oom) {
			s = clean.p;
			len = clean.len;
		}
	}
	int rc = pcre2_match((pcre2_code *)r->code, (PCRE2_SPTR)s, len, 0, PCRE2_ANCHORED,
	                     (pcre2_match_data *)r->match, NULL);
	json_buf_free(&clean);
	return rc >= 0 ? 1.0 : 0.0;
}

void reward_regex_free(RewardRegex *r)
{
	pcre2_match_data_free((pcre2_match_data *)r->match);
	pcre2_code_free((pcre2_code *)r->code);
	r->code = r->match = NULL;
}

/* ---- soft overlong ----------------------------------------------------------------- */

double reward_soft_overlong(int n, int max_len, int cache)
{
	if (n <= max_len - cache)
		return 0.0;
	if (n <= max_len)
		return (double)(max_len - cache - n) / cache;
	return -1.0;
}

/* ---- requests ------------------------------------------------------------------------
 */

char *reward_request_json(const char *prompt, const char *completion, size_t comp_len,
                          const int32_t *ids, int n_ids, int index, int batch_size,
                          const char *extra)
{
	JsonBuf b = {0};
	json_buf_puts(&b, "{\"prompt\":");
	json_string_utf8(&b, prompt ? prompt : "", prompt ? strlen(prompt) : 0);
	json_buf_puts(&b, ",\"completion\":");
	json_string_utf8(&b, completion ? completion : "", completion ? comp_len : 0);
	json_buf_puts(&b, ",\"completion_ids\":[");
	for (int i = 0; i < n_ids; i++)
		json_buf_printf(&b, i ? ",%d" : "%d", (int)ids[i]);
	json_buf_printf(&b, "],\"index\":%d,\"batch_size\":%d", index, batch_size);
	/* Splice the members of extra between its outer braces; a raw newline in
	 * JSON text can only be whitespace, so it becomes a space to keep one line. */
	const char *open = extra ? strchr(extra, '{') : NULL;
	const char *close = open ? strrchr(open, '}') : NULL;
	if (close) {
		Span in = span_trim((Span){open + 1, (size_t)(close - open - 1)});
		if (in.n) {
			json_buf_put(&b, ",", 1);
			size_t at = b.len;
			json_buf_put(&b, in.p, in.n);
			for (size_t i = at; !b.oom && i < b.len; i++)
				if (b.p[i] == '\n' || b.p[i] == '\r')
					b.p[i] = ' ';
		}
	}
	json_buf_put(&b, "}", 1);
	if (b.oom) {
		json_buf_free(&b);
		return NULL;
	}
	return b.p;
}

/* ---- the reward program
 * ---------------------------------------------------------------- */

#define CMD_FMT "reward_command '%.200s'"

static void fd_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

/* How the program ended: code is CLD_EXITED (value: its status), CLD_KILLED
 * or CLD_DUMPED (value: the signal), or 0 when unknown (reaped elsewhere). */
typedef struct ProcEnd {
	int code, value;
} ProcEnd;

/* Waits up to seconds for the child to exit, without reaping it (WNOWAIT):
 * until it is reaped its pid cannot be reused, so its process group can still
 * be signalled safely. Returns 1 with *end when it exited. */
static int wait_exit(pid_t pid, double seconds, ProcEnd *end)
{
	double deadline = trl_now() + seconds;
	for (;;) {
		siginfo_t si;
		memset(&si, 0, sizeof si);
		int w = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
		if (w == 0 && si.si_pid == pid) {
			end->code = si.si_code;
			end->value = si.si_status;
			return 1;
		}
		if (w < 0 && errno != EINTR) {
			end->code = end->value = 0;
			return 1;
		}
		if (trl_now() >= deadline)
			return 0;
		sleep_ms(5);
	}
}

/* Kills the program's process group (whatever the shell left running) and
 * reaps the program; leaves p not running. */
static void proc_kill(RewardProc *p)
{
	fd_close(&p->to_child);
	fd_close(&p->from_child);
	if (p->pid > 0) {
		kill(-p->pid, SIGKILL);
		kill(p->pid, SIGKILL);
		int status;
		while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR) {
		}
	}
	p->pid = 0;
	p->len = 0;
}

int reward_proc_start(RewardProc *p, const char *cmd, double timeout_s, TrlErr *err)
{
	memset(p, 0, sizeof *p);
	p->to_child = p->from_child = -1;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, rc;
	if (!(p->cmd = strdup(cmd))) {
		rc = trl_errf(err, TRL_ENOMEM, "out of memory");
		goto fail;
	}
	p->timeout_s = timeout_s;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		rc = trl_errf(err, TRL_EIO, "cannot create pipes for " CMD_FMT ": %s",
		              cmd, strerror(errno));
		goto fail;
	}
	pid_t pid = fork();
	if (pid < 0) {
		rc = trl_errf(err, TRL_EIO, "cannot start " CMD_FMT ": fork: %s", cmd,
		              strerror(errno));
		goto fail;
	}
	if (pid == 0) {
		/* Child: only async-signal-safe calls until exec. Its own process
		 * group, so that stopping it also stops what the shell started. */
		setpgid(0, 0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		int a = fcntl(in[0], F_DUPFD, 3), b = fcntl(out[1], F_DUPFD, 3);
		if (a < 0 || b < 0 || dup2(a, 0) < 0 || dup2(b, 1) < 0)
			_exit(127);
		if (close_range(3, ~0U, 0) < 0) {
			long maxfd = sysconf(_SC_OPEN_MAX);
			for (long fd = 3;
			     fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536); fd++)
				close((int)fd);
		}
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		static const char msg[] =
		    "trl-hpc: cannot execute /bin/sh for reward_command\n";
		ssize_t ignored = write(2, msg, sizeof msg - 1);
		(void)ignored;
		_exit(127);
	}
	setpgid(pid, pid); /* also here, so that it holds before we ever signal */
	close(in[0]);
	close(out[1]);
	p->pid = pid;
	p->to_child = in[1];
	p->from_child = out[0];
	fcntl(p->to_child, F_SETFL, fcntl(p->to_child, F_GETFL) | O_NONBLOCK);
	fcntl(p->from_child, F_SETFL, fcntl(p->from_child, F_GETFL) | O_NONBLOCK);
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		fd_close(&in[i]);
		fd_close(&out[i]);
	}
	free(p->cmd);
	p->cmd = NULL;
	return rc;
}

/* The error for a program that has ended after p->line_no responses. */
static int exit_error(const RewardProc *p, ProcEnd end, TrlErr *err)
{
	if (end.code == CLD_KILLED || end.code == CLD_DUMPED)
		return trl_errf(err, TRL_EIO,
		                CMD_FMT
		                " was killed by signal %d (%s) after %ld responses",
		                p->cmd, end.value, strsignal(end.value), p->line_no);
	if (end.code != CLD_EXITED)
		return trl_errf(err, TRL_EIO, CMD_FMT " exited after %ld responses",
		                p->cmd, p->line_no);
	return trl_errf(
	    err, TRL_EIO,
	    CMD_FMT " exited with status %d after %ld responses%s (its stderr "
	            "above may say why)",
	    p->cmd, end.value, p->line_no,
	    end.value == 127 ? "; 127 usually means the command was not found" : "");
}

/* A printable excerpt of a line for messages: at most 80 bytes, control
 * characters shown as '?'. */
static const char *excerpt(const char *s, size_t n, char out[96])
{
	size_t k = n < 80 ? n : 80;
	for (size_t i = 0; i < k; i++)
		out[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
	strcpy(out + k, n > k ? "..." : "");
	return out;
}

/* One reward value: number or null (NaN). */
static int reward_value(const RewardProc *p, const JsonValue *v, const char *what,
                        double *out, TrlErr *err)
{
	if (v->type == JSON_NULL) {
		*out = NAN;
		return 0;
	}
	if (v->type == JSON_NUMBER) {
		*out = v->num;
		return 0;
	}
	return trl_errf(err, TRL_EFORMAT,
	                CMD_FMT ": response line %ld: %s is %s %s, not a number or null",
	                p->cmd, p->line_no, what, v->type == JSON_ARRAY ? "an" : "a",
	                json_type_name(v->type));
}

/* Handles one response line: writes its rewards into rewards[*got...] and
 * advances *got. sent: requests written in full, so answerable. */
static int take_line(RewardProc *p, const char *line, size_t n, int sent, int *got,
                     double *rewards, TrlErr *err)
{
	char ex[96];
	JsonValue *root = NULL;
	JsonError je;
	int rc = 0;
	if ((rc = json_parse(line, n, &root, &je)) < 0) {
		if (rc == TRL_ENOMEM)
			return trl_errf(err, rc, "out of memory reading " CMD_FMT,
			                p->cmd);
		return trl_errf(
		    err, TRL_EFORMAT,
		    CMD_FMT ": response line %ld is not JSON (%s at column %d): %s",
		    p->cmd, p->line_no, je.msg, je.column, excerpt(line, n, ex));
	}
	if (root->type != JSON_OBJECT) {
		rc = trl_errf(err, TRL_EFORMAT,
		              CMD_FMT ": response line %ld is not a JSON object: %s",
		              p->cmd, p->line_no, excerpt(line, n, ex));
		goto done;
	}
	const JsonValue *one = json_get(root, "reward"),
	                *many = json_get(root, "rewards");
	int pending = sent - *got;
	if (one && many) {
		rc = trl_errf(err, TRL_EFORMAT,
		              CMD_FMT
		              ": response line %ld has both reward and rewards: %s",
		              p->cmd, p->line_no, excerpt(line, n, ex));
	} else if (one) {
		if (pending < 1)
			rc = trl_errf(err, TRL_EFORMAT,
			              CMD_FMT
			              ": response line %ld answers a request that was "
			              "not sent (%d sent, all answered)",
			              p->cmd, p->line_no, sent);
		else if ((rc = reward_value(p, one, "reward", &rewards[*got], err)) == 0)
			(*got)++;
	} else if (many) {
		if (many->type != JSON_ARRAY || many->len == 0) {
			rc = trl_errf(err, TRL_EFORMAT,
			              CMD_FMT
			              ": response line %ld: rewards must be a non-empty "
			              "array: %s",
			              p->cmd, p->line_no, excerpt(line, n, ex));
		} else if (many->len > (size_t)pending) {
			rc = trl_errf(err, TRL_EFORMAT,
			              CMD_FMT
			              ": response line %ld: rewards has %zu values but "
			              "only %d requests are pending",
			              p->cmd, p->line_no, many->len, pending);
		} else {
			for (size_t i = 0; i < many->len && rc == 0; i++) {
				char what[32];
				snprintf(what, sizeof what, "rewards[%zu]", i);
				rc = reward_value(p, json_at(many, i), what,
				                  &rewards[*got + i], err);
			}
			if (rc == 0)
				*got += (int)many->len;
		}
	} else {
		rc = trl_errf(err, TRL_EFORMAT,
		              CMD_FMT
		              ": response line %ld has neither reward nor rewards: %s",
		              p->cmd, p->line_no, excerpt(line, n, ex));
	}
done:
	json_free(root);
	return rc;
}

/* Consumes the complete lines in p->buf while answers are still due. Blank
 * lines are skipped (but counted, so line numbers match the program's). */
static int take_lines(RewardProc *p, int n, int sent, int *got, double *rewards,
                      TrlErr *err)
{
	size_t at = 0;
	int rc = 0;
	while (*got < n && at < p->len) {
		char *nl = memchr(p->buf + at, '\n', p->len - at);
		if (!nl)
			break;
		Span line = {p->buf + at, (size_t)(nl - (p->buf + at))};
		at = (size_t)(nl + 1 - p->buf);
		p->line_no++;
		if (!span_trim(line).n)
			continue;
		if ((rc = take_line(p, line.p, line.n, sent, got, rewards, err)) < 0)
			break;
	}
	memmove(p->buf, p->buf + at, p->len - at);
	p->len -= at;
	return rc;
}

/* Reads what the program has written; 0 at EOF, -1 on an error, else 1. */
static int read_some(RewardProc *p, TrlErr *err)
{
	if (p->cap - p->len < 65536) {
		size_t cap = p->cap ? 2 * p->cap : 131072;
		char *nb = realloc(p->buf, cap);
		if (!nb)
			return trl_errf(err, TRL_ENOMEM, "out of memory reading " CMD_FMT,
			                p->cmd);
		p->buf = nb;
		p->cap = cap;
	}
	ssize_t r = read(p->from_child, p->buf + p->len, p->cap - p->len);
	if (r > 0) {
		p->len += (size_t)r;
		return 1;
	}
	if (r == 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 1;
	return trl_errf(err, TRL_EIO, "cannot read from " CMD_FMT ": %s", p->cmd,
	                strerror(errno));
}

int reward_proc_score(RewardProc *p, int n, char *const *requests, double *rewards,
                      TrlErr *err)
{
	if (p->pid <= 0)
		return trl_errf(err, TRL_EINVAL, CMD_FMT " is not running",
		                p->cmd ? p->cmd : "");
	if (n <= 0)
		return 0;

	/* All the request lines in one buffer; ends[i]: offset just past line i. */
	size_t total = 0;
	for (int i = 0; i < n; i++) {
		size_t k = strlen(requests[i]);
		if (memchr(requests[i], '\n', k))
			return trl_errf(err, TRL_EINTERNAL,
			                "request %d for " CMD_FMT " contains a newline",
			                i, p->cmd);
		total += k + 1;
	}
	char *out = malloc(total);
	size_t *ends = malloc((size_t)n * sizeof *ends);
	if (!out || !ends) {
		free(out);
		free(ends);
		return trl_errf(err, TRL_ENOMEM, "out of memory");
	}
	for (size_t i = 0, at = 0; i < (size_t)n; i++) {
		size_t k = strlen(requests[i]);
		memcpy(out + at, requests[i], k);
		out[at + k] = '\n';
		at += k + 1;
		ends[i] = at;
	}

	/* A write to a program that has exited raises SIGPIPE; block it in this
	 * thread so that write() reports EPIPE instead, and swallow the signal
	 * afterwards unless it was already pending. */
	sigset_t pipe_set, old_mask, pending_set;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
	sigpending(&pending_set);
	int pipe_was_pending = sigismember(&pending_set, SIGPIPE);

	double deadline = p->timeout_s > 0 ? trl_now() + p->timeout_s : 0;
	size_t woff = 0;
	int sent = 0, got = 0, can_write = 1, rc = 0;
	while (got < n) {
		struct pollfd fds[2] = {{p->from_child, POLLIN, 0},
		                        {p->to_child, POLLOUT, 0}};
		int nf = woff < total && can_write ? 2 : 1;
		int ms = -1;
		if (deadline > 0) {
			double left = deadline - trl_now();
			if (left <= 0) {
				rc = trl_errf(
				    err, TRL_EIO,
				    CMD_FMT " gave no answer within %g s (response line "
				            "%ld; %d of %d requests answered); raise "
				            "reward_timeout if it is only slow",
				    p->cmd, p->timeout_s, p->line_no + 1, got, n);
				goto fail;
			}
			ms = (int)fmin(ceil(left * 1000), 1e9);
		}
		int pr = poll(fds, (nfds_t)nf, ms);
		if (pr < 0 && errno != EINTR) {
			rc = trl_errf(err, TRL_EIO, "poll on " CMD_FMT ": %s", p->cmd,
			              strerror(errno));
			goto fail;
		}
		if (pr <= 0)
			continue;
		if (nf == 2 && fds[1].revents) {
			ssize_t w = write(p->to_child, out + woff, total - woff);
			if (w > 0) {
				woff += (size_t)w;
				while (sent < n && ends[sent] <= woff)
					sent++;
			} else if (w < 0 && (errno == EPIPE || errno == EBADF)) {
				can_write =
				    0; /* it closed its stdin: read on until EOF */
			} else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			           errno != EINTR) {
				rc = trl_errf(err, TRL_EIO,
				              "cannot write to " CMD_FMT ": %s", p->cmd,
				              strerror(errno));
				goto fail;
			}
		}
		if (fds[0].revents) {
			int r = read_some(p, err);
			if (r < 0) {
				rc = r;
				goto fail;
			}
			if ((rc = take_lines(p, n, sent, &got, rewards, err)) < 0)
				goto fail;
			if (r == 0 && got < n) {
				/* EOF: it closed its stdout, which normally means it
				 * exited. */
				ProcEnd end;
				if (wait_exit(p->pid, 2.0, &end)) {
					rc = exit_error(p, end, err);
				} else {
					rc = trl_errf(
					    err, TRL_EIO,
					    CMD_FMT
					    " closed its stdout after %ld responses",
					    p->cmd, p->line_no);
				}
				goto fail;
			}
		}
	}
	/* Output beyond the last answer due cannot belong to any request. */
	if (span_trim((Span){p->buf, p->len}).n) {
		char ex[96];
		rc = trl_errf(err, TRL_EFORMAT,
		              CMD_FMT
		              ": response line %ld answers a request that was not sent "
		              "(all %d were answered): %s",
		              p->cmd, p->line_no + 1, n, excerpt(p->buf, p->len, ex));
		goto fail;
	}
	goto done;
fail:
	/* The conversation is out of step: no later batch could trust it. */
	proc_kill(p);
done:
	sigpending(&pending_set);
	if (!pipe_was_pending && sigismember(&pending_set, SIGPIPE)) {
		struct timespec zero = {0, 0};
		sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	free(out);
	free(ends);
	return rc;
}

void reward_proc_stop(RewardProc *p)
{
	if (p->pid > 0) {
		/* EOF on its stdin asks it to finish; its stdout is drained meanwhile
		 * so that a last write cannot block it. */
		fd_close(&p->to_child);
		double deadline = trl_now() + (p->timeout_s > 0 ? p->timeout_s : 5.0);
		ProcEnd end;
		while (!wait_exit(p->pid, 0, &end)) {
			double left = deadline - trl_now();
			if (left <= 0)
				break;
			struct pollfd f = {p->from_child, POLLIN, 0};
			int ms = (int)fmin(ceil(left * 1000), 20);
			if (p->from_child >= 0 && poll(&f, 1, ms) > 0) {
				char sink[4096];
				ssize_t r = read(p->from_child, sink, sizeof sink);
				if (r == 0 ||
				    (r < 0 && errno != EAGAIN && errno != EINTR))
					fd_close(&p->from_child);
			} else if (p->from_child < 0) {
				sleep_ms(5);
			}
		}
		proc_kill(p); /* SIGKILL if still running, and the rest of its group */
	}
	free(p->cmd);
	free(p->buf);
	memset(p, 0, sizeof *p);
	p->to_child = p->from_child = -1;
}
