/* test_chat_template.c - chat-template recognition, rendering, assistant spans and
 * the errors the Jinja templates raise. Byte parity with Jinja over many
 * conversations is checked by chat_parity.sh; these tests pin behaviour a user
 * relies on. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"

TestSuite(chat_find);
TestSuite(chat_render);

#define U(c)                                                                             \
	{                                                                                \
		"user", c, NULL                                                          \
	}
#define A(c)                                                                             \
	{                                                                                \
		"assistant", c, NULL                                                     \
	}
#define S(c)                                                                             \
	{                                                                                \
		"system", c, NULL                                                        \
	}

static ChatTemplate find_ok(const char *name)
{
	ChatTemplate ct;
	TrlErr err = {0};
	cr_assert_eq(chat_template_find(&ct, name, &err), 0, "%s", err.msg);
	return ct;
}

/* Renders and asserts success; the caller frees r. */
static ChatRender render_ok(const char *tmpl, const ChatMessage *m, int n,
                            const ChatRenderOptions *o)
{
	ChatTemplate ct = find_ok(tmpl);
	ChatRender r = {0};
	TrlErr err = {0};
	cr_assert_eq(chat_render(&ct, m, n, o, &r, &err), 0, "%s", err.msg);
	cr_assert_eq(strlen(r.text), r.len);
	return r;
}

static void assert_span(const ChatRender *r, int i, const char *want)
{
	cr_assert_lt(i, r->n_spans);
	const ChatSpan *s = &r->spans[i];
	cr_assert_eq(s->end - s->begin, strlen(want), "span %d is \"%.*s\"", i,
	             (int)(s->end - s->begin), r->text + s->begin);
	cr_assert_eq(memcmp(r->text + s->begin, want, strlen(want)), 0,
	             "span %d is \"%.*s\", want \"%s\"", i, (int)(s->end - s->begin),
	             r->text + s->begin, want);
}

/* Reads tests/data/chat_templates/file from the source tree (malloc'ed). */
static char *read_template(const char *file)
{
	const char *top = getenv("top_srcdir");
	const char *dirs[] = {top ? top : ".", ".", ".."};
	char path[4096];
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/tests/data/chat_templates/%s", dirs[i],
		         file);
		FILE *f = fopen(path, "rb");
		if (!f)
			continue;
		fseek(f, 0, SEEK_END);
		long n = ftell(f);
		fseek(f, 0, SEEK_SET);
		char *buf = malloc((size_t)n + 1);
		cr_assert(buf);
		cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
		buf[n] = '\0';
		fclose(f);
		return buf;
	}
	cr_assert_fail("tests/data/chat_templates/%s not found (set top_srcdir)", file);
	return NULL;
}

/* Rewrites a template the way other published copies differ: raw newlines inside
 * string literals become \n escapes, and runs of blanks inside tags become one. */
static char *respell(const char *s)
{
	char *out = malloc(2 * strlen(s) + 1), *o = out;
	char quote = 0;
	int in_tag = 0;
	for (const char *p = s; *p; p++) {
		if (!in_tag && p[0] == '{' && (p[1] == '{' || p[1] == '%')) {
			in_tag = 1;
			*o++ = *p++;
		} else if (in_tag && !quote && (p[0] == '}' || p[0] == '%') &&
		           p[1] == '}') {
			in_tag = 0;
			*o++ = *p++;
		} else if (in_tag && quote && *p == '\\') {
			*o++ = *p++;
		} else if (in_tag && (*p == '\'' || *p == '"')) {
			quote = quote == *p ? 0 : quote ? quote : *p;
		} else if (in_tag && quote && *p == '\n') {
			*o++ = '\\';
			*o++ = 'n';
			continue;
		} else if (in_tag && !quote && *p == ' ' && p[1] == ' ') {
			continue;
		}
		*o++ = *p;
	}
	*o = '\0';
	return out;
}

/* ---- Recognition ---- */

Test(chat_find, names_and_aliases_are_case_insensitive)
{
	cr_assert_eq(find_ok("chatml").kind, CHAT_TEMPLATE_CHATML);
	cr_assert_eq(find_ok("Qwen2.5").kind, CHAT_TEMPLATE_QWEN25);
	cr_assert_eq(find_ok("qwen3").kind, CHAT_TEMPLATE_QWEN3);
	cr_assert_eq(find_ok("LLAMA3").kind, CHAT_TEMPLATE_LLAMA3);
	cr_assert_eq(find_ok("llama2").kind, CHAT_TEMPLATE_LLAMA2);
	cr_assert_eq(find_ok("mistral").kind, CHAT_TEMPLATE_MISTRAL);
	cr_assert_eq(find_ok("gemma").kind, CHAT_TEMPLATE_GEMMA);
	cr_assert_eq(find_ok("gemma3").kind, CHAT_TEMPLATE_GEMMA);
	cr_assert_eq(find_ok("deepseek-v3").kind, CHAT_TEMPLATE_DEEPSEEK_V3);
	cr_assert_eq(find_ok("LFM2").kind, CHAT_TEMPLATE_LFM2);
	cr_assert_str_eq(find_ok("lfm2").name, "lfm2");
	cr_assert_str_eq(find_ok("llama-3").name, "llama3");
}

Test(chat_find, unknown_name_is_an_error_listing_the_known_ones)
{
	ChatTemplate ct;
	TrlErr err = {0};
	cr_assert_eq(chat_template_find(&ct, "vicuna", &err), TRL_EUNSUPPORTED);
	cr_assert(strstr(err.msg, "vicuna"), "%s", err.msg);
	cr_assert(strstr(err.msg, "qwen3") && strstr(err.msg, "llama2") &&
	              strstr(err.msg, "gemma") && strstr(err.msg, "chatml") &&
	              strstr(err.msg, "lfm2"),
	          "%s", err.msg);
	cr_assert(strstr(chat_template_names(), "lfm2"), "%s", chat_template_names());
	cr_assert_eq(chat_template_find(&ct, "", &err), TRL_EINVAL);
}

Test(chat_find, every_reference_template_is_recognised_as_its_family)
{
	static const struct {
		const char *file;
		ChatTemplateKind kind;
	} files[] = {
	    {"chatml.jinja", CHAT_TEMPLATE_CHATML},
	    {"qwen2.5.jinja", CHAT_TEMPLATE_QWEN25},
	    {"qwen3.jinja", CHAT_TEMPLATE_QWEN3},
	    {"llama3.jinja", CHAT_TEMPLATE_LLAMA3},
	    {"llama2-chat.jinja", CHAT_TEMPLATE_LLAMA2},
	    {"mistral-instruct.jinja", CHAT_TEMPLATE_MISTRAL},
	    {"gemma3.jinja", CHAT_TEMPLATE_GEMMA},
	    {"deepseek_v3.jinja", CHAT_TEMPLATE_DEEPSEEK_V3},
	    {"lfm2.jinja", CHAT_TEMPLATE_LFM2},
	};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *src = read_template(files[i].file);
		char *alt = respell(src);
		if (strstr(files[i].file, "qwen2.5") || strstr(files[i].file, "gemma"))
			cr_assert_neq(strcmp(src, alt), 0, "respell changed nothing");
		cr_assert_eq(find_ok(src).kind, files[i].kind, "%s", files[i].file);
		cr_assert_eq(find_ok(alt).kind, files[i].kind, "respelled %s",
		             files[i].file);
		free(src);
		free(alt);
	}
}

Test(chat_find, whitespace_that_jinja_removes_does_not_matter)
{
	const char *a =
	    "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
	    "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
	    "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
	const char *b = "{%- for message in messages -%}\n"
	                "    {{- \"<|im_start|>\" + message[\"role\"] + \"\n\" + "
	                "message[\"content\"] + \"<|im_end|>\" + \"\\n\" }}\n"
	                "{%- endfor %}\n"
	                "{% if add_generation_prompt %}\n"
	                "    {{- '<|im_start|>assistant\n' }}\n"
	                "{%- endif %}\n";
	/* Only "-" makes the newline before endif vanish, so this one differs. */
	const char *c =
	    "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
	    "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
	    "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}\n{% endif %}";
	cr_assert_eq(find_ok(a).kind, CHAT_TEMPLATE_CHATML);
	cr_assert_eq(find_ok(b).kind, CHAT_TEMPLATE_CHATML);
	char *na = chat_template_normalize(a), *nb = chat_template_normalize(b);
	cr_assert_str_eq(na, nb);
	ChatTemplate ct;
	TrlErr err = {0};
	cr_assert_eq(chat_template_find(&ct, c, &err), TRL_EUNSUPPORTED);
	free(na);
	free(nb);
}

Test(chat_find, a_changed_template_is_never_taken_for_a_family)
{
	ChatTemplate ct;
	TrlErr err = {0};
	/* Output-relevant changes: a literal, and text Jinja would print. */
	const char *edits[] = {
	    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
	    "message['content'] + '<|im_end|>' + '\\n\\n'}}{% endfor %}{% if "
	    "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
	    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
	    "message['content'] + '<|im_end|>' + '\\n'}} {% endfor %}{% if "
	    "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
	};
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(chat_template_find(&ct, edits[i], &err), TRL_EUNSUPPORTED,
		             "edit %d was recognised as %s", i, ct.name);
		cr_assert(strstr(err.msg, "chat_template") && strstr(err.msg, "qwen3"),
		          "%s", err.msg);
	}
	char *src = read_template("qwen2.5.jinja");
	char *p = strstr(src, "You are Qwen");
	p[4] = 'X'; /* both default system prompts must match */
	cr_assert_eq(chat_template_find(&ct, src, &err), TRL_EUNSUPPORTED);
	free(src);
}

/* ---- Rendering and spans ---- */

Test(chat_render, chatml_spans_cover_content_and_im_end)
{
	ChatMessage m[] = {S("sys"), U("hi"), A("hello"), U("again"), A("bye")};
	ChatRenderOptions o = {.add_generation_prompt = 1};
	ChatRender r = render_ok("chatml", m, 5, &o);
	cr_assert_str_eq(r.text,
	                 "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi"
	                 "<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
	                 "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"
	                 "bye<|im_end|>\n<|im_start|>assistant\n");
	cr_assert_eq(r.n_spans, 2);
	assert_span(&r, 0, "hello<|im_end|>");
	assert_span(&r, 1, "bye<|im_end|>");
	cr_assert_eq(r.spans[0].message, 2);
	cr_assert_eq(r.spans[1].message, 4);
	chat_render_free(&r);
}

Test(chat_render, qwen25_adds_its_default_system_prompt)
{
	ChatMessage m[] = {U("hi"), A("yo")};
	ChatRender r = render_ok("qwen2.5", m, 2, NULL);
	cr_assert_str_eq(r.text,
	                 "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
	                 "You are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
	                 "hi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n");
	assert_span(&r, 0, "yo<|im_end|>");
	chat_render_free(&r);
}

Test(chat_render, qwen3_keeps_only_thinking_after_the_last_query)
{
	ChatMessage m[] = {
	    U("Q1"), {"assistant", "A1", "r1"}, U("Q2"), {"assistant", "A2", "r2"}};
	ChatRender r = render_ok("qwen3", m, 4, NULL);
	cr_assert_str_eq(r.text,
	                 "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1"
	                 "<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
	                 "<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2"
	                 "<|im_end|>\n");
	assert_span(&r, 0, "A1<|im_end|>");
	assert_span(&r, 1, "<think>\nr2\n</think>\n\nA2<|im_end|>");
	chat_render_free(&r);

	/* Without reasoning_content, thinking is split out of the content. */
	ChatMessage t[] = {U("Q"), A("<think>\nwhy\n</think>\n\nA")};
	r = render_ok("qwen3", t, 2, NULL);
	assert_span(&r, 0, "<think>\nwhy\n</think>\n\nA<|im_end|>");
	chat_render_free(&r);
}

Test(chat_render, qwen3_enable_thinking_false_adds_an_empty_think_block)
{
	ChatMessage m[] = {U("Q")};
	ChatRenderOptions o = {.add_generation_prompt = 1};
	ChatRender r = render_ok("qwen3", m, 1, &o);
	cr_assert_str_eq(r.text,
	                 "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
	chat_render_free(&r);
	o.enable_thinking = CHAT_THINKING_ON;
	r = render_ok("qwen3", m, 1, &o);
	cr_assert_str_eq(r.text,
	                 "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
	chat_render_free(&r);
	o.enable_thinking = CHAT_THINKING_OFF;
	r = render_ok("qwen3", m, 1, &o);
	cr_assert_str_eq(r.text, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
	                         "<think>\n\n</think>\n\n");
	cr_assert_eq(r.n_spans, 0, "the generation prompt is not a span");
	chat_render_free(&r);
}

Test(chat_render, llama3_trims_and_always_adds_the_assistant_header)
{
	ChatMessage m[] = {S(" sys "), U("\thi\n"), A(" ok\u3000")};
	ChatRenderOptions o = {.bos_token = "<|begin_of_text|>",
	                       .eos_token = "<|eot_id|>"};
	ChatRender r = render_ok("llama3", m, 3, &o);
	cr_assert_str_eq(r.text,
	                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>"
	                 "\n\nsys<|eot_id|><|start_header_id|>user<|end_header_id|>"
	                 "\n\nhi<|eot_id|><|start_header_id|>assistant"
	                 "<|end_header_id|>\n\nok<|eot_id|><|start_header_id|>"
	                 "assistant<|end_header_id|>\n\n");
	assert_span(&r, 0, "ok<|eot_id|>");
	chat_render_free(&r);
}

Test(chat_render, llama2_folds_the_system_prompt_into_the_first_turn)
{
	ChatMessage m[] = {S("Be brief."), U("hi "), A(" yo "), U("x")};
	ChatRenderOptions o = {.bos_token = "<s>", .eos_token = "</s>"};
	ChatRender r = render_ok("llama2", m, 4, &o);
	cr_assert_str_eq(r.text,
	                 "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST] yo "
	                 "</s><s>[INST] x [/INST]");
	cr_assert_eq(r.n_spans, 1);
	assert_span(&r, 0, " yo </s>");
	chat_render_free(&r);
}

Test(chat_render, mistral_and_gemma_spans_end_with_the_turn_end)
{
	ChatMessage m[] = {U("hi"), A(" yo\u00a0")};
	ChatRenderOptions o = {.bos_token = "<s>", .eos_token = "</s>"};
	ChatRender r = render_ok("mistral", m, 2, &o);
	cr_assert_str_eq(r.text, "<s>[INST] hi [/INST] yo\u00a0</s>");
	assert_span(&r, 0, " yo\u00a0</s>");
	chat_render_free(&r);

	ChatMessage g[] = {S("sys"), U("hi"), A(" yo\u00a0")};
	ChatRenderOptions go = {.add_generation_prompt = 1, .bos_token = "<bos>"};
	r = render_ok("gemma", g, 3, &go);
	cr_assert_str_eq(r.text, "<bos><start_of_turn>user\nsys\n\nhi<end_of_turn>\n"
	                         "<start_of_turn>model\nyo<end_of_turn>\n"
	                         "<start_of_turn>model\n");
	assert_span(&r, 0, "yo<end_of_turn>");
	chat_render_free(&r);
}

Test(chat_render, lfm2_opens_with_bos_and_renders_chatml_turns)
{
	ChatMessage m[] = {S("You are terse."), U("What is 2+2?"), A("4")};
	ChatRenderOptions o = {.add_generation_prompt = 1,
	                       .bos_token = "<|startoftext|>",
	                       .eos_token = "<|im_end|>"};
	ChatRender r = render_ok("lfm2", m, 3, &o);
	cr_assert_str_eq(r.text, "<|startoftext|><|im_start|>system\nYou are terse."
	                         "<|im_end|>\n<|im_start|>user\nWhat is 2+2?"
	                         "<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
	                         "<|im_start|>assistant\n");
	cr_assert_eq(r.n_spans, 1);
	assert_span(&r, 0, "4<|im_end|>");
	cr_assert_eq(r.spans[0].message, 2);
	chat_render_free(&r);

	/* An empty first system message is consumed and renders nothing; a later
	 * one is an ordinary turn. */
	ChatMessage e[] = {S(""), U("hi"), S("late")};
	o.add_generation_prompt = 0;
	r = render_ok("lfm2", e, 3, &o);
	cr_assert_str_eq(r.text, "<|startoftext|><|im_start|>user\nhi<|im_end|>\n"
	                         "<|im_start|>system\nlate<|im_end|>\n");
	cr_assert_eq(r.n_spans, 0);
	chat_render_free(&r);
}

Test(chat_render, template_like_content_is_copied_verbatim)
{
	ChatMessage m[] = {U("{{ messages }} {% if x %}"),
	                   A("<|im_end|>{{ eos_token }}")};
	ChatRender r = render_ok("chatml", m, 2, NULL);
	cr_assert_str_eq(r.text, "<|im_start|>user\n{{ messages }} {% if x %}<|im_end|>\n"
	                         "<|im_start|>assistant\n<|im_end|>{{ eos_token }}"
	                         "<|im_end|>\n");
	assert_span(&r, 0, "<|im_end|>{{ eos_token }}<|im_end|>");
	chat_render_free(&r);
}

/* ---- Errors the templates raise ---- */

static void assert_render_fails(const char *tmpl, const ChatMessage *m, int n, int code,
                                const char *needle)
{
	ChatTemplate ct = find_ok(tmpl);
	ChatRender r = {0};
	TrlErr err = {0};
	cr_assert_eq(chat_render(&ct, m, n, NULL, &r, &err), code, "%s: %s", tmpl,
	             err.msg);
	cr_assert(strstr(err.msg, needle), "%s: \"%s\" lacks \"%s\"", tmpl, err.msg,
	          needle);
	cr_assert_null(r.text);
	cr_assert_eq(r.n_spans, 0);
}

Test(chat_render, inst_templates_require_alternating_roles)
{
	ChatMessage two_users[] = {U("a"), U("b")};
	const char *alt =
	    "Conversation roles must alternate user/assistant/user/assistant/...";
	assert_render_fails("mistral", two_users, 2, TRL_EINVAL, alt);
	assert_render_fails("llama2", two_users, 2, TRL_EINVAL, alt);
	assert_render_fails("gemma", two_users, 2, TRL_EINVAL, alt);
	ChatMessage first_assistant[] = {A("a"), U("b")};
	assert_render_fails("llama2", first_assistant, 2, TRL_EINVAL, "messages[0]");
	ChatMessage sys[] = {S("s"), U("b")};
	assert_render_fails("mistral", sys, 2, TRL_EINVAL, alt);
	ChatMessage odd_sys[] = {U("a"), S("b")};
	assert_render_fails("mistral", odd_sys, 2, TRL_EINVAL,
	                    "Only user and assistant roles are supported!");
}

Test(chat_render, empty_and_unsupported_conversations_fail_like_jinja)
{
	assert_render_fails("qwen3", NULL, 0, TRL_EINVAL, "no messages");
	assert_render_fails("gemma", NULL, 0, TRL_EINVAL, "no messages");
	ChatRender r = render_ok("llama3", NULL, 0, NULL);
	cr_assert_str_eq(r.text, "<|start_header_id|>assistant<|end_header_id|>\n\n");
	chat_render_free(&r);

	ChatMessage tool[] = {U("a"), {"tool", "42", NULL}};
	assert_render_fails("qwen3", tool, 2, TRL_EUNSUPPORTED, "role 'tool'");
	assert_render_fails("lfm2", tool, 2, TRL_EUNSUPPORTED, "role 'tool'");
	assert_render_fails("lfm2", NULL, 0, TRL_EINVAL, "no messages");
	ChatMessage null_content[] = {U("a"), {"assistant", NULL, NULL}};
	assert_render_fails("chatml", null_content, 2, TRL_EUNSUPPORTED, "messages[1]");
}

Test(chat_render, free_is_safe_on_a_zeroed_render)
{
	ChatRender r = {0};
	chat_render_free(&r);
	chat_render_free(&r);
	cr_assert_null(r.text);
}
