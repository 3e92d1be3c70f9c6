/* chat_template.c - built-in chat-template renderers (ChatML, Qwen2.5, Qwen3,
 * Llama-3, Llama-2, Mistral, Gemma, DeepSeek-V3, LFM2) and template recognition. */
#include "chat_template.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- Output buffer ---- */

/* Appends s[0..n) to out->text; returns 0 or TRL_ENOMEM. */
static int put(ChatRender *out, const char *s, size_t n)
{
	if (out->len + n + 1 > out->cap) {
		size_t cap = out->cap ? out->cap : 256;
		while (cap < out->len + n + 1)
			cap *= 2;
		char *p = realloc(out->text, cap);
		if (!p)
			return TRL_ENOMEM;
		out->text = p;
		out->cap = cap;
	}
	memcpy(out->text + out->len, s, n);
	out->len += n;
	out->text[out->len] = '\0';
	return 0;
}

static int puts_(ChatRender *out, const char *s)
{
	return put(out, s, strlen(s));
}

/* Records the span [begin, out->len) for assistant message msg. */
static int add_span(ChatRender *out, size_t begin, int msg)
{
	if (out->n_spans == out->span_cap) {
		int cap = out->span_cap ? 2 * out->span_cap : 8;
		ChatSpan *p = realloc(out->spans, (size_t)cap * sizeof *p);
		if (!p)
			return TRL_ENOMEM;
		out->spans = p;
		out->span_cap = cap;
	}
	out->spans[out->n_spans++] = (ChatSpan){begin, out->len, msg};
	return 0;
}

void chat_render_free(ChatRender *out)
{
	if (!out)
		return;
	free(out->text);
	free(out->spans);
	memset(out, 0, sizeof *out);
}

/* ---- Python string methods ---- */

/* A borrowed slice of a string. */
typedef struct {
	const char *p;
	size_t n;
} Str;

static Str str_of(const char *s)
{
	return (Str){s, strlen(s)};
}

/* Length of the character at s[0..n) when it is whitespace by Python's
 * str.isspace() (which str.strip() and Jinja's trim use), else 0. */
static size_t space_len_at(const unsigned char *s, size_t n)
{
	if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20)))
		return 1;
	if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0))
		return 2; /* U+0085, U+00A0 */
	if (n >= 3 && s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80)
		return 3; /* U+1680 */
	if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&
	    ((s[2] >= 0x80 && s[2] <= 0x8a) || s[2] == 0xa8 || s[2] == 0xa9 ||
	     s[2] == 0xaf))
		return 3; /* U+2000..U+200A, U+2028, U+2029, U+202F */
	if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f)
		return 3; /* U+205F */
	if (n >= 3 && s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80)
		return 3; /* U+3000 */
	return 0;
}

/* Python's s.strip() / Jinja's |trim: Unicode whitespace at both ends. */
static Str str_strip(Str s)
{
	const unsigned char *p = (const unsigned char *)s.p;
	size_t b = 0, e = s.n, k;
	while (b < e && (k = space_len_at(p + b, e - b)) > 0)
		b += k;
	while (e > b) {
		/* Step back over one UTF-8 character and test it. */
		size_t c = e - 1;
		while (c > b && (p[c] & 0xc0) == 0x80 && e - c < 4)
			c--;
		if (space_len_at(p + c, e - c) != e - c)
			break;
		e = c;
	}
	return (Str){s.p + b, e - b};
}

static Str str_lstrip_nl(Str s)
{
	while (s.n > 0 && s.p[0] == '\n')
		s.p++, s.n--;
	return s;
}

static Str str_rstrip_nl(Str s)
{
	while (s.n > 0 && s.p[s.n - 1] == '\n')
		s.n--;
	return s;
}

static const char *str_find(Str s, const char *pat, size_t from)
{
	size_t m = strlen(pat);
	for (size_t i = from; i + m <= s.n; i++)
		if (memcmp(s.p + i, pat, m) == 0)
			return s.p + i;
	return NULL;
}

/* Python's s.split(pat)[-1]: the text after the last occurrence of pat. */
static Str str_after_last(Str s, const char *pat)
{
	size_t m = strlen(pat);
	const char *q, *last = NULL;
	for (size_t from = 0; (q = str_find(s, pat, from)) != NULL;
	     from = (size_t)(q - s.p) + m)
		last = q;
	if (!last)
		return s;
	return (Str){last + m, s.n - (size_t)(last + m - s.p)};
}

/* Python's s.split(pat)[0]: the text before the first occurrence of pat. */
static Str str_before_first(Str s, const char *pat)
{
	const char *q = str_find(s, pat, 0);
	return q ? (Str){s.p, (size_t)(q - s.p)} : s;
}

static int has_prefix(Str s, const char *pre)
{
	size_t m = strlen(pre);
	return s.n >= m && memcmp(s.p, pre, m) == 0;
}

static int has_suffix(Str s, const char *suf)
{
	size_t m = strlen(suf);
	return s.n >= m && memcmp(s.p + s.n - m, suf, m) == 0;
}

static int put_str(ChatRender *out, Str s)
{
	return put(out, s.p, s.n);
}

/* ---- Renderers ---- */

#define TRY(x)                                                                           \
	do {                                                                             \
		if ((x) < 0)                                                             \
			goto oom;                                                        \
	} while (0)

static const char ALTERNATE_MSG[] =
    "Conversation roles must alternate user/assistant/user/assistant/...";

typedef struct {
	const ChatTemplate *ct;
	const ChatMessage *m;
	int n;
	const ChatRenderOptions *o;
	const char *bos, *eos;
	ChatRender *out;
	TrlErr *err;
} Ctx;

static int is_role(const ChatMessage *m, const char *role)
{
	return strcmp(m->role, role) == 0;
}

/* The error the Jinja template raises through raise_exception, at message i. */
static int template_error(Ctx *c, int i, const char *what)
{
	return trl_errf(c->err, TRL_EINVAL,
	                "chat template '%s': messages[%d] (role '%s'): %s", c->ct->name,
	                i, c->m[i].role, what);
}

/* Templates that read messages[0] fail on an empty conversation in Jinja too. */
static int empty_error(Ctx *c)
{
	return trl_errf(
	    c->err, TRL_EINVAL,
	    "chat template '%s': the conversation has no messages (the template "
	    "reads messages[0])",
	    c->ct->name);
}

/* Plain ChatML: every message as <|im_start|>role\ncontent<|im_end|>\n. The
 * skip_first_system flag makes Qwen2.5 skip a leading system message it already
 * rendered in its header. */
static int chatml_turns(Ctx *c, int skip_first_system)
{
	ChatRender *out = c->out;
	for (int i = 0; i < c->n; i++) {
		const ChatMessage *m = &c->m[i];
		if (i == 0 && skip_first_system && is_role(m, "system"))
			continue;
		TRY(puts_(out, "<|im_start|>"));
		TRY(puts_(out, m->role));
		TRY(puts_(out, "\n"));
		size_t begin = out->len;
		TRY(puts_(out, m->content));
		TRY(puts_(out, "<|im_end|>"));
		if (is_role(m, "assistant"))
			TRY(add_span(out, begin, i));
		TRY(puts_(out, "\n"));
	}
	if (c->o->add_generation_prompt)
		TRY(puts_(out, "<|im_start|>assistant\n"));
	return 0;
oom:
	return TRL_ENOMEM;
}

static int render_chatml(Ctx *c)
{
	return chatml_turns(c, 0);
}

static int render_qwen25(Ctx *c)
{
	if (c->n == 0)
		return empty_error(c);
	ChatRender *out = c->out;
	if (is_role(&c->m[0], "system")) {
		TRY(puts_(out, "<|im_start|>system\n"));
		TRY(puts_(out, c->m[0].content));
		TRY(puts_(out, "<|im_end|>\n"));
	} else {
		TRY(puts_(out,
		          "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
		          "You are a helpful assistant.<|im_end|>\n"));
	}
	return chatml_turns(c, 1);
oom:
	return TRL_ENOMEM;
}

/* Qwen3 keeps the thinking of assistant turns after the last real user query (one
 * that is not a <tool_response> wrapper) and drops it from earlier turns. Without
 * reasoning_content, thinking is split out of content at "</think>". */
static int render_qwen3(Ctx *c)
{
	if (c->n == 0)
		return empty_error(c);
	ChatRender *out = c->out;
	if (is_role(&c->m[0], "system")) {
		TRY(puts_(out, "<|im_start|>system\n"));
		TRY(puts_(out, c->m[0].content));
		TRY(puts_(out, "<|im_end|>\n"));
	}
	int last_query = c->n - 1;
	for (int i = c->n - 1; i >= 0; i--) {
		Str s = str_of(c->m[i].content);
		if (is_role(&c->m[i], "user") && !(has_prefix(s, "<tool_response>") &&
		                                   has_suffix(s, "</tool_response>"))) {
			last_query = i;
			break;
		}
	}
	for (int i = 0; i < c->n; i++) {
		const ChatMessage *m = &c->m[i];
		if (is_role(m, "user") || (is_role(m, "system") && i > 0)) {
			TRY(puts_(out, "<|im_start|>"));
			TRY(puts_(out, m->role));
			TRY(puts_(out, "\n"));
			TRY(puts_(out, m->content));
			TRY(puts_(out, "<|im_end|>\n"));
			continue;
		}
		if (!is_role(m, "assistant"))
			continue;
		Str content = str_of(m->content), reasoning = {"", 0};
		if (m->reasoning_content) {
			reasoning = str_of(m->reasoning_content);
		} else if (str_find(content, "</think>", 0)) {
			reasoning = str_before_first(content, "</think>");
			reasoning = str_lstrip_nl(
			    str_after_last(str_rstrip_nl(reasoning), "<think>"));
			content = str_lstrip_nl(str_after_last(content, "</think>"));
		}
		TRY(puts_(out, "<|im_start|>assistant\n"));
		size_t begin = out->len;
		if (i > last_query && (i == c->n - 1 || reasoning.n > 0)) {
			TRY(puts_(out, "<think>\n"));
			TRY(put_str(out, str_lstrip_nl(str_rstrip_nl(reasoning))));
			TRY(puts_(out, "\n</think>\n\n"));
			TRY(put_str(out, str_lstrip_nl(content)));
		} else {
			TRY(put_str(out, content));
		}
		TRY(puts_(out, "<|im_end|>"));
		TRY(add_span(out, begin, i));
		TRY(puts_(out, "\n"));
	}
	if (c->o->add_generation_prompt) {
		TRY(puts_(out, "<|im_start|>assistant\n"));
		if (c->o->enable_thinking == CHAT_THINKING_OFF)
			TRY(puts_(out, "<think>\n\n</think>\n\n"));
	}
	return 0;
oom:
	return TRL_ENOMEM;
}

/* Llama-3 (first release) appends the assistant header whether or not a
 * generation prompt is asked for, exactly as its template does. */
static int render_llama3(Ctx *c)
{
	ChatRender *out = c->out;
	for (int i = 0; i < c->n; i++) {
		const ChatMessage *m = &c->m[i];
		if (i == 0)
			TRY(puts_(out, c->bos));
		TRY(puts_(out, "<|start_header_id|>"));
		TRY(puts_(out, m->role));
		TRY(puts_(out, "<|end_header_id|>\n\n"));
		size_t begin = out->len;
		TRY(put_str(out, str_strip(str_of(m->content))));
		TRY(puts_(out, "<|eot_id|>"));
		if (is_role(m, "assistant"))
			TRY(add_span(out, begin, i));
	}
	TRY(puts_(out, "<|start_header_id|>assistant<|end_header_id|>\n\n"));
	return 0;
oom:
	return TRL_ENOMEM;
}

/* Llama-2 chat folds a leading system message into the first user turn inside
 * <<SYS>> markers and strips every turn. Roles other than user and assistant at
 * odd positions pass the alternation check and render nothing, as in Jinja. */
static int render_llama2(Ctx *c)
{
	if (c->n == 0)
		return empty_error(c);
	ChatRender *out = c->out, sys = {0};
	int first = is_role(&c->m[0], "system") ? 1 : 0;
	for (int i = first; i < c->n; i++) {
		const ChatMessage *m = &c->m[i];
		int k = i - first;
		if (is_role(m, "user") != (k % 2 == 0)) {
			chat_render_free(&sys);
			return template_error(c, i, ALTERNATE_MSG);
		}
		Str content = str_of(m->content);
		if (k == 0 && first) {
			TRY(puts_(&sys, "<<SYS>>\n"));
			TRY(puts_(&sys, c->m[0].content));
			TRY(puts_(&sys, "\n<</SYS>>\n\n"));
			TRY(puts_(&sys, m->content));
			content = (Str){sys.text, sys.len};
		}
		if (is_role(m, "user")) {
			TRY(puts_(out, c->bos));
			TRY(puts_(out, "[INST] "));
			TRY(put_str(out, str_strip(content)));
			TRY(puts_(out, " [/INST]"));
		} else if (is_role(m, "assistant")) {
			size_t begin = out->len;
			TRY(puts_(out, " "));
			TRY(put_str(out, str_strip(content)));
			TRY(puts_(out, " "));
			TRY(puts_(out, c->eos));
			TRY(add_span(out, begin, i));
		}
	}
	chat_render_free(&sys);
	return 0;
oom:
	chat_render_free(&sys);
	return TRL_ENOMEM;
}

static int render_mistral(Ctx *c)
{
	ChatRender *out = c->out;
	TRY(puts_(out, c->bos));
	for (int i = 0; i < c->n; i++) {
		const ChatMessage *m = &c->m[i];
		if (is_role(m, "user") != (i % 2 == 0))
			return template_error(c, i, ALTERNATE_MSG);
		if (is_role(m, "user")) {
			TRY(puts_(out, "[INST] "));
			TRY(puts_(out, m->content));
			TRY(puts_(out, " [/INST]"));
		} else if (is_role(m, "assistant")) {
			size_t begin = out->len;
			TRY(puts_(out, m->content));
			TRY(puts_(out, c->eos));
			TRY(add_span(out, begin, i));
		} else {
			return template_error(
			    c, i, "Only user and assistant roles are supported!");
		}
	}
	return 0;
oom:
	return TRL_ENOMEM;
}

/* Gemma puts a leading system message at the top of the first user turn and calls
 * the assistant "model". */
static int render_gemma(Ctx *c)
{
	ChatRender *out = c->out;
	TRY(puts_(out, c->bos));
	if (c->n == 0)
		return empty_error(c);
	int first = is_role(&c->m[0], "system") ? 1 : 0;
	for (int i = first; i < c->n; i++) {
		const ChatMessage *m = &c->m[i];
		int k = i - first;
		if (is_role(m, "user") != (k % 2 == 0))
			return template_error(c, i, ALTERNATE_MSG);
		int assistant = is_role(m, "assistant");
		TRY(puts_(out, "<start_of_turn>"));
		TRY(puts_(out, assistant ? "model" : m->role));
		TRY(puts_(out, "\n"));
		if (k == 0 && first) {
			TRY(puts_(out, c->m[0].content));
			TRY(puts_(out, "\n\n"));
		}
		size_t begin = out->len;
		TRY(put_str(out, str_strip(str_of(m->content))));
		TRY(puts_(out, "<end_of_turn>"));
		if (assistant)
			TRY(add_span(out, begin, i));
		TRY(puts_(out, "\n"));
	}
	if (c->o->add_generation_prompt)
		TRY(puts_(out, "<start_of_turn>model\n"));
	return 0;
oom:
	return TRL_ENOMEM;
}

/* DeepSeek-V3 gathers every system message, joined by blank lines, after bos. */
static int render_deepseek_v3(Ctx *c)
{
	ChatRender *out = c->out;
	TRY(puts_(out, c->bos));
	int n_sys = 0;
	for (int i = 0; i < c->n; i++) {
		if (!is_role(&c->m[i], "system"))
			continue;
		if (n_sys++ > 0)
			TRY(puts_(out, "\n\n"));
		TRY(puts_(out, c->m[i].content));
	}
	for (int i = 0; i < c->n; i++) {
		const ChatMessage *m = &c->m[i];
		if (is_role(m, "user")) {
			TRY(puts_(out, "<｜User｜>"));
			TRY(puts_(out, m->content));
		} else if (is_role(m, "assistant")) {
			TRY(puts_(out, "<｜Assistant｜>"));
			size_t begin = out->len;
			TRY(puts_(out, m->content));
			TRY(puts_(out, "<｜end▁of▁sentence｜>"));
			TRY(add_span(out, begin, i));
		}
	}
	if (c->o->add_generation_prompt)
		TRY(puts_(out, "<｜Assistant｜>"));
	return 0;
oom:
	return TRL_ENOMEM;
}

/* LFM2 opens with bos and turns a leading system message into its system
 * prompt, rendered only when non-empty (an empty one vanishes). The rest is
 * ChatML. The template's tool list and "tool" role wrapping are not reproduced:
 * chat_render rejects the tool role before any renderer runs. */
static int render_lfm2(Ctx *c)
{
	if (c->n == 0)
		return empty_error(c);
	ChatRender *out = c->out;
	TRY(puts_(out, c->bos));
	if (is_role(&c->m[0], "system") && c->m[0].content[0]) {
		TRY(puts_(out, "<|im_start|>system\n"));
		TRY(puts_(out, c->m[0].content));
		TRY(puts_(out, "<|im_end|>\n"));
	}
	return chatml_turns(c, 1);
oom:
	return TRL_ENOMEM;
}

/* ---- Template table ---- */

/* The Jinja sources the renderers reproduce, from tests/data/chat_templates/
 * (see SOURCES.md there); recognition compares normalised forms against them. */
static const char src_chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n"
    "' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_g"
    "eneration_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char src_qwen25[] =
    "{%-  if tools  %}\n"
    "    {{-  '<|im_start|>system\n"
    "' }}\n"
    "    {%-  if messages[0]['role'] == 'system'  %}\n"
    "        {{-  messages[0]['content'] }}\n"
    "    {%-  else  %}\n"
    "        {{-  'You are Qwen, created by Alibaba Cloud. You are a helpfu"
    "l assistant.' }}\n"
    "    {%-  endif  %}\n"
    "    {{-  \"\n"
    "\n"
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML t"
    "ags:\n"
    "<tools>\" }}\n"
    "    {%-  for tool in tools  %}\n"
    "        {{-  \"\n"
    "\" }}\n"
    "        {{-  tool | tojson }}\n"
    "    {%-  endfor  %}\n"
    "    {{-  \"\n"
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and ar"
    "guments within <tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    "{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}"
    "\n"
    "</tool_call><|im_end|>\n"
    "\" }}\n"
    "{%-  else  %}\n"
    "    {%-  if messages[0]['role'] == 'system'  %}\n"
    "        {{-  '<|im_start|>system\n"
    "' + messages[0]['content'] + '<|im_end|>\n"
    "' }}\n"
    "    {%-  else  %}\n"
    "        {{-  '<|im_start|>system\n"
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|"
    "im_end|>\n"
    "' }}\n"
    "    {%-  endif  %}\n"
    "{%-  endif  %}\n"
    "{%-  for message in messages  %}\n"
    "    {%-  if (message.role == \"user\") or (message.role == \"system\" "
    "and not loop.first) or (message.role == \"assistant\" and not message."
    "tool_calls)  %}\n"
    "        {{-  '<|im_start|>' + message.role + '\n"
    "' + message.content + '<|im_end|>' + '\n"
    "' }}\n"
    "    {%-  elif message.role == \"assistant\"  %}\n"
    "        {{-  '<|im_start|>' + message.role }}\n"
    "        {%-  if message.content  %}\n"
    "            {{-  '\n"
    "' + message.content }}\n"
    "        {%-  endif  %}\n"
    "        {%-  for tool_call in message.tool_calls  %}\n"
    "            {%-  if tool_call.function is defined  %}\n"
    "                {%-  set tool_call = tool_call.function  %}\n"
    "            {%-  endif  %}\n"
    "            {{-  '\n"
    "<tool_call>\n"
    "{\"name\": \"' }}\n"
    "            {{-  tool_call.name }}\n"
    "            {{-  '\", \"arguments\": ' }}\n"
    "            {{-  tool_call.arguments | tojson }}\n"
    "            {{-  '}\n"
    "</tool_call>' }}\n"
    "        {%-  endfor  %}\n"
    "        {{-  '<|im_end|>\n"
    "' }}\n"
    "    {%-  elif message.role == \"tool\"  %}\n"
    "        {%-  if (loop.index0 == 0) or (messages[loop.index0 - 1].role "
    "!= \"tool\")  %}\n"
    "            {{-  '<|im_start|>user' }}\n"
    "        {%-  endif  %}\n"
    "        {{-  '\n"
    "<tool_response>\n"
    "' }}\n"
    "        {{-  message.content }}\n"
    "        {{-  '\n"
    "</tool_response>' }}\n"
    "        {%-  if loop.last or (messages[loop.index0 + 1].role != \"tool"
    "\")  %}\n"
    "            {{-  '<|im_end|>\n"
    "' }}\n"
    "        {%-  endif  %}\n"
    "    {%-  endif  %}\n"
    "{%-  endfor  %}\n"
    "{%-  if add_generation_prompt  %}\n"
    "    {{-  '<|im_start|>assistant\n"
    "' }}\n"
    "{%-  endif  %}";

static const char src_qwen3[] =
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist wi"
    "th the user query.\\n\\nYou are provided with function signatures with"
    "in <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json objec"
    "t with function name and arguments within <tool_call></tool_call> XML "
    "tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\"
    "\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|"
    ">\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages"
    "|length - 1) %}\n"
    "{%- for message in messages[::-1] %}\n"
    "    {%- set index = (messages|length - 1) - loop.index0 %}\n"
    "    {%- if ns.multi_step_tool and message.role == \"user\" and not(mes"
    "sage.content.startswith('<tool_response>') and message.content.endswit"
    "h('</tool_response>')) %}\n"
    "        {%- set ns.multi_step_tool = false %}\n"
    "        {%- set ns.last_query_index = index %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" a"
    "nd not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {%- set content = message.content %}\n"
    "        {%- set reasoning_content = '' %}\n"
    "        {%- if message.reasoning_content is defined and message.reason"
    "ing_content is not none %}\n"
    "            {%- set reasoning_content = message.reasoning_content %}\n"
    "        {%- else %}\n"
    "            {%- if '</think>' in message.content %}\n"
    "                {%- set content = message.content.split('</think>')[-1"
    "].lstrip('\\n') %}\n"
    "                {%- set reasoning_content = message.content.split('</t"
    "hink>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n"
    "            {%- endif %}\n"
    "        {%- endif %}\n"
    "        {%- if loop.index0 > ns.last_query_index %}\n"
    "            {%- if loop.last or (not loop.last and reasoning_content) "
    "%}\n"
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + "
    "reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip("
    "'\\n') }}\n"
    "            {%- else %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n' + content }}"
    "\n"
    "            {%- endif %}\n"
    "        {%- else %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and content) or (not loop.first) %}"
    "\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool"
    "\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool"
    "\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}"
    "\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}";

static const char src_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{%"
    " set content = '<|start_header_id|>' + message['role'] + '<|end_header"
    "_id|>\n"
    "\n"
    "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %"
    "}{% set content = bos_token + content %}{% endif %}{{ content }}{% end"
    "for %}{{ '<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "' }}";

static const char src_llama2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = message"
    "s[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% "
    "set loop_messages = messages %}{% set system_message = false %}{% endi"
    "f %}{% for message in loop_messages %}{% if (message['role'] == 'user'"
    ") != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles m"
    "ust alternate user/assistant/user/assistant/...') }}{% endif %}{% if l"
    "oop.index0 == 0 and system_message != false %}{% set content = '<<SYS>"
    ">\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{%"
    " else %}{% set content = message['content'] %}{% endif %}{% if message"
    "['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/"
    "INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.st"
    "rip() + ' ' + eos_token }}{% endif %}{% endfor %}";

static const char src_mistral[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation r"
    "oles must alternate user/assistant/user/assistant/...') }}{% endif %}{"
    "% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '"
    " [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['conte"
    "nt'] + eos_token}}{% else %}{{ raise_exception('Only user and assistan"
    "t roles are supported!') }}{% endif %}{% endfor %}";

static const char src_gemma[] =
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n"
    "\n"
    "' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] "
    "+ '\n"
    "\n"
    "' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/as"
    "sistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n"
    "' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n"
    "' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n"
    "'}}\n"
    "{%- endif -%}\n";

static const char src_deepseek_v3[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_pro"
    "mpt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool"
    "=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%"
    "- for message in messages %}{%- if message['role'] == 'system' %}{%- i"
    "f ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + messag"
    "e['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.sy"
    "stem_prompt = ns.system_prompt + '\n"
    "\n"
    "' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{bos_to"
    "ken}}{{ns.system_prompt}}{%- for message in messages %}{%- if message["
    "'role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + messa"
    "ge['content']}}{%- endif %}{%- if message['role'] == 'assistant' and m"
    "essage['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool"
    " in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜"
    "tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>'"
    " + tool['function']['name'] + '\n"
    "' + '```json' + '\n"
    "' + tool['function']['arguments'] + '\n"
    "' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- els"
    "e %}{{'\n"
    "' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['func"
    "tion']['name'] + '\n"
    "' + '```json' + '\n"
    "' + tool['function']['arguments'] + '\n"
    "' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentenc"
    "e｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == '"
    "assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{"
    "'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{"
    "%- set ns.is_tool = false -%}{%- else %}{{'<｜Assistant｜>' + message['c"
    "ontent'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if messa"
    "ge['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_outpu"
    "t_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['c"
    "ontent'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %"
    "}{%- else %}{{'\n"
    "<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{"
    "%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outp"
    "uts▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool "
    "%}{{'<｜Assistant｜>'}}{% endif %}";

static const char src_lfm2[] =
    "{{- bos_token -}}\n"
    "{%- set ns = namespace(system=\"\", start=0) -%}\n"
    "{%- if messages[0][\"role\"] == \"system\" -%}\n"
    "    {%- set ns.system = messages[0][\"content\"] -%}\n"
    "    {%- set ns.start = 1 -%}\n"
    "{%- endif -%}\n"
    "{%- if tools -%}\n"
    "    {%- if ns.system -%}\n"
    "        {%- set ns.system = ns.system + \"\\n\" -%}\n"
    "    {%- endif -%}\n"
    "    {%- set ns.system = ns.system + \"List of tools: <|tool_list_start|>"
    "[\" -%}\n"
    "    {%- for tool in tools -%}\n"
    "        {%- set ns.system = ns.system + (tool if tool is string else too"
    "l | tojson) -%}\n"
    "        {%- if not loop.last -%}\n"
    "            {%- set ns.system = ns.system + \", \" -%}\n"
    "        {%- endif -%}\n"
    "    {%- endfor -%}\n"
    "    {%- set ns.system = ns.system + \"]<|tool_list_end|>\" -%}\n"
    "{%- endif -%}\n"
    "{%- if ns.system -%}\n"
    "    {{- \"<|im_start|>system\\n\" + ns.system + \"<|im_end|>\\n\" -}}\n"
    "{%- endif -%}\n"
    "{%- for message in messages[ns.start:] -%}\n"
    "    {%- set content = message[\"content\"] -%}\n"
    "    {%- if content is not string -%}\n"
    "        {%- set content = content | tojson -%}\n"
    "    {%- endif -%}\n"
    "    {%- if message[\"role\"] == \"tool\" -%}\n"
    "        {%- set content = \"<|tool_response_start|>\" + content + \"<|to"
    "ol_response_end|>\" -%}\n"
    "    {%- endif -%}\n"
    "    {{- \"<|im_start|>\" + message[\"role\"] + \"\\n\" + content + \"<|i"
    "m_end|>\\n\" -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{- \"<|im_start|>assistant\\n\" -}}\n"
    "{%- endif -%}\n";

typedef struct {
	ChatTemplateKind kind;
	const char *name;
	const char *aliases[3];
	const char *source;
	int (*render)(Ctx *c);
} TemplateDef;

static const TemplateDef TEMPLATES[CHAT_TEMPLATE_COUNT] = {
    {CHAT_TEMPLATE_CHATML, "chatml", {NULL}, src_chatml, render_chatml},
    {CHAT_TEMPLATE_QWEN25, "qwen2.5", {"qwen2", NULL}, src_qwen25, render_qwen25},
    {CHAT_TEMPLATE_QWEN3, "qwen3", {NULL}, src_qwen3, render_qwen3},
    {CHAT_TEMPLATE_LLAMA3, "llama3", {"llama-3", NULL}, src_llama3, render_llama3},
    {CHAT_TEMPLATE_LLAMA2, "llama2", {"llama-2", NULL}, src_llama2, render_llama2},
    {CHAT_TEMPLATE_MISTRAL, "mistral", {NULL}, src_mistral, render_mistral},
    {CHAT_TEMPLATE_GEMMA, "gemma", {"gemma3", NULL}, src_gemma, render_gemma},
    {CHAT_TEMPLATE_DEEPSEEK_V3,
     "deepseek-v3",
     {"deepseek_v3", "deepseek", NULL},
     src_deepseek_v3,
     render_deepseek_v3},
    {CHAT_TEMPLATE_LFM2, "lfm2", {NULL}, src_lfm2, render_lfm2},
};

const char *chat_template_names(void)
{
	return "chatml, qwen2.5 (qwen2), qwen3, llama3 (llama-3), llama2 (llama-2), "
	       "mistral, gemma (gemma3), deepseek-v3 (deepseek_v3, deepseek), lfm2";
}

/* ---- Normalisation of Jinja sources ---- */

typedef struct {
	size_t start, end; /* the tag's bytes, delimiters included */
	char kind;         /* '{' expression, '%' statement, '#' comment */
	int open_minus, open_plus, close_minus;
} Tag;

/* Finds the tag starting at s[i] ("{{", "{%" or "{#"), skipping string literals
 * inside expressions and statements. Returns 0, or -1 when it never closes. */
static int scan_tag(const char *s, size_t i, Tag *t)
{
	char kind = s[i + 1];
	char close = kind == '{' ? '}' : kind;
	size_t j = i + 2;
	t->start = i;
	t->kind = kind;
	t->open_minus = s[j] == '-';
	t->open_plus = s[j] == '+';
	for (; s[j]; j++) {
		if (kind != '#' && (s[j] == '\'' || s[j] == '"')) {
			char q = s[j++];
			while (s[j] && s[j] != q)
				j += (s[j] == '\\' && s[j + 1]) ? 2 : 1;
			if (!s[j])
				return -1;
			continue;
		}
		if (s[j] == close && s[j + 1] == '}') {
			t->close_minus = j > i + 2 && s[j - 1] == '-';
			t->end = j + 2;
			return 0;
		}
	}
	return -1;
}

static int is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' ||
	       ch == '\v';
}

/* Appends the text between two tags as Jinja (trim_blocks, lstrip_blocks, no
 * keep_trailing_newline) outputs it. prev/next are NULL at the template's ends. */
static void norm_text(ChatRender *b, const char *s, size_t from, size_t to,
                      const Tag *prev, const Tag *next)
{
	int line_start = prev == NULL;
	if (prev && prev->close_minus) {
		while (from < to && is_ws(s[from]))
			from++;
		line_start = from > prev->end && s[from - 1] == '\n';
	} else if (prev && prev->kind != '{') {
		if (from < to && s[from] == '\n')
			from++, line_start = 1;
		else if (from + 1 < to && s[from] == '\r' && s[from + 1] == '\n')
			from += 2, line_start = 1;
	}
	if (next && next->open_minus) {
		while (to > from && is_ws(s[to - 1]))
			to--;
	} else if (next && next->kind != '{' && !next->open_plus) {
		size_t l = to;
		while (l > from && (s[l - 1] == ' ' || s[l - 1] == '\t'))
			l--;
		if ((l > from && s[l - 1] == '\n') || (l == from && line_start))
			to = l;
	}
	if (!next && to > from && s[to - 1] == '\n')
		to--;
	if (to > from) {
		put(b, "\x01", 1);
		put(b, s + from, to - from);
	}
}

/* Appends a tag's inside without whitespace outside string literals, and with
 * string literals replaced by their decoded values between \x03 marks. */
static void norm_tag(ChatRender *b, const char *s, const Tag *t)
{
	size_t j = t->start + 2 + (size_t)(t->open_minus || t->open_plus);
	size_t end = t->end - 2 - (size_t)t->close_minus;
	char kind[2] = {'\x02', t->kind};
	put(b, kind, 2);
	while (j < end) {
		char ch = s[j];
		if (ch == '\'' || ch == '"') {
			put(b, "\x03", 1);
			for (j++; j < end && s[j] != ch; j++) {
				char d = s[j];
				if (d == '\\' && j + 1 < end) {
					char e = s[++j];
					d = e == 'n'   ? '\n'
					    : e == 't' ? '\t'
					    : e == 'r' ? '\r'
					               : e;
					if (!strchr("ntr\\'\"", e))
						put(b, "\\", 1);
				}
				put(b, &d, 1);
			}
			put(b, "\x03", 1);
			j++;
		} else {
			if (!is_ws(ch))
				put(b, &ch, 1);
			j++;
		}
	}
}

char *chat_template_normalize(const char *s)
{
	ChatRender b = {0};
	Tag prev, cur;
	int have_prev = 0;
	size_t text_from = 0, i = 0;
	while (s[i]) {
		if (s[i] == '{' &&
		    (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#') &&
		    scan_tag(s, i, &cur) == 0) {
			norm_text(&b, s, text_from, i, have_prev ? &prev : NULL, &cur);
			if (cur.kind != '#')
				norm_tag(&b, s, &cur);
			prev = cur;
			have_prev = 1;
			i = text_from = cur.end;
		} else {
			i++;
		}
	}
	norm_text(&b, s, text_from, i, have_prev ? &prev : NULL, NULL);
	if (put(&b, "", 0) < 0) {
		chat_render_free(&b);
		return NULL;
	}
	free(b.spans);
	return b.text;
}

/* ---- Public API ---- */

static int looks_like_jinja(const char *s)
{
	return strstr(s, "{{") || strstr(s, "{%");
}

int chat_template_find(ChatTemplate *ct, const char *name_or_jinja, TrlErr *err)
{
	if (!name_or_jinja || !*name_or_jinja)
		return trl_errf(
		    err, TRL_EINVAL,
		    "chat_template is empty; give one of: %s, or the tokenizer's "
		    "Jinja chat_template",
		    chat_template_names());
	if (!looks_like_jinja(name_or_jinja)) {
		for (int k = 0; k < CHAT_TEMPLATE_COUNT; k++) {
			const TemplateDef *d = &TEMPLATES[k];
			int hit = strcasecmp(name_or_jinja, d->name) == 0;
			for (int a = 0; !hit && d->aliases[a]; a++)
				hit = strcasecmp(name_or_jinja, d->aliases[a]) == 0;
			if (hit) {
				*ct = (ChatTemplate){d->kind, d->name};
				return 0;
			}
		}
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "unknown chat template '%s'; the built-in templates are: %s",
		    name_or_jinja, chat_template_names());
	}
	char *want = chat_template_normalize(name_or_jinja);
	if (!want)
		return trl_errf(err, TRL_ENOMEM,
		                "out of memory normalising a chat template");
	int found = -1;
	for (int k = 0; k < CHAT_TEMPLATE_COUNT && found < 0; k++) {
		char *have = chat_template_normalize(TEMPLATES[k].source);
		if (!have) {
			free(want);
			return trl_errf(err, TRL_ENOMEM,
			                "out of memory normalising a chat template");
		}
		if (strcmp(want, have) == 0)
			found = k;
		free(have);
	}
	free(want);
	if (found < 0) {
		char head[61];
		size_t n = strlen(name_or_jinja) < 60 ? strlen(name_or_jinja) : 60;
		memcpy(head, name_or_jinja, n);
		head[n] = '\0';
		for (size_t k = 0; k < n; k++)
			if (head[k] == '\n' || head[k] == '\r' || head[k] == '\t')
				head[k] = ' ';
		return trl_errf(
		    err, TRL_EUNSUPPORTED,
		    "the tokenizer's chat_template (\"%s%s\") is not one of the "
		    "built-in templates; set the chat_template config key to one of: "
		    "%s",
		    head, strlen(name_or_jinja) > 60 ? "..." : "", chat_template_names());
	}
	*ct = (ChatTemplate){TEMPLATES[found].kind, TEMPLATES[found].name};
	return 0;
}

int chat_render(const ChatTemplate *ct, const ChatMessage *msgs, int n,
                const ChatRenderOptions *o, ChatRender *out, TrlErr *err)
{
	static const ChatRenderOptions defaults = {0};
	memset(out, 0, sizeof *out);
	if (!ct || (unsigned)ct->kind >= CHAT_TEMPLATE_COUNT)
		return trl_errf(err, TRL_EINVAL, "chat_render: no chat template chosen");
	if (n < 0 || (n > 0 && !msgs))
		return trl_errf(err, TRL_EINVAL, "chat_render: bad message list");
	const char *name = TEMPLATES[ct->kind].name;
	for (int i = 0; i < n; i++) {
		const char *r = msgs[i].role;
		if (!r)
			return trl_errf(err, TRL_EINVAL,
			                "chat template '%s': messages[%d] has no role",
			                name, i);
		if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
			return trl_errf(
			    err, TRL_EUNSUPPORTED,
			    "chat template '%s': messages[%d] has role '%s'; only "
			    "system, user and assistant messages are supported",
			    name, i, r);
		if (!msgs[i].content)
			return trl_errf(
			    err, TRL_EUNSUPPORTED,
			    "chat template '%s': messages[%d] (role '%s') has no "
			    "string content; null and list content are not supported",
			    name, i, r);
	}
	if (!o)
		o = &defaults;
	ChatTemplate named = {ct->kind, name};
	Ctx c = {&named,
	         msgs,
	         n,
	         o,
	         o->bos_token ? o->bos_token : "",
	         o->eos_token ? o->eos_token : "",
	         out,
	         err};
	int rc = TEMPLATES[ct->kind].render(&c);
	if (rc == 0 && put(out, "", 0) < 0)
		rc = TRL_ENOMEM;
	if (rc < 0) {
		chat_render_free(out);
		if (rc == TRL_ENOMEM)
			return trl_errf(err, rc, "chat template '%s': out of memory",
			                name);
		return rc;
	}
	return 0;
}
