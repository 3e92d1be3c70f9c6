/* chat_template.h - built-in C renderers for the chat templates of common model
 * families, byte-identical to Hugging Face's Jinja rendering (apply_chat_template).
 *
 * Usage:
 *     ChatTemplate ct;
 *     if (chat_template_find(&ct, tokenizer_chat_template_or_name, &err) < 0)
 *             ... err.msg lists the known templates
 *     ChatRenderOptions o = {.add_generation_prompt = 0, .bos_token = "<s>",
 *                            .eos_token = "</s>"};
 *     ChatRender r = {0};
 *     if (chat_render(&ct, msgs, n, &o, &r, &err) < 0)
 *             ... the same condition the Jinja template raises (err.msg says which)
 *     ... r.text[0..r.len), r.spans[0..r.n_spans)
 *     chat_render_free(&r);
 *
 * Recognition: chat_template_find accepts either a name ("chatml", "qwen2.5",
 * "qwen3", "llama3", "llama2", "mistral", "gemma", "deepseek-v3", "lfm2", plus
 * the aliases listed by chat_template_names) or the Jinja source of a template,
 * as found under "chat_template" in tokenizer_config.json. Jinja sources are
 * compared after normalisation: whitespace that Jinja itself removes (inside
 * tags outside string literals, and text eaten by "-" markers, trim_blocks and
 * lstrip_blocks) is dropped and string literals are compared by value ('\n'
 * equals a raw newline). Only a template whose normalised form equals a built-in
 * one is recognised, so a modified template is never mistaken for a family; it is
 * an error instead.
 *
 * Messages: roles "system", "user" and "assistant" with string content. Tool
 * calls, the "tool" role, multimodal (list) content and null content are not
 * supported and are errors; no tool list is ever rendered (templates see tools as
 * absent). reasoning_content is read by Qwen3 only.
 *
 * Assistant spans: for assistant_only_loss, every rendered assistant turn yields
 * one span [begin, end) of byte offsets into text covering what the model must
 * learn to emit: the turn's content plus its end-of-turn text, mirroring the
 * {% generation %} blocks of TRL's training templates. Per template:
 *   chatml, qwen2.5   content + "<|im_end|>" (not the "\n" that follows)
 *   qwen3             "<think>...</think>\n\n" when rendered + content + "<|im_end|>"
 *   llama3            trimmed content + "<|eot_id|>"
 *   llama2            " " + stripped content + " " + eos_token (the leading space
 *                     belongs to the first SentencePiece token of the answer)
 *   mistral           content + eos_token
 *   gemma             trimmed content + "<end_of_turn>" (not the "\n")
 *   deepseek-v3       content + "<｜end▁of▁sentence｜>"
 *   lfm2              content + "<|im_end|>" (not the "\n" that follows)
 * Assistant messages a template drops render no span. The generation prompt is
 * never part of a span.
 *
 * Ownership: ChatTemplate is a small value with no heap memory. chat_render fills
 * out with heap memory that the caller releases with chat_render_free, which is
 * safe on a zeroed ChatRender. Errors return TRL_EINVAL (the conversation breaks
 * a rule of the template), TRL_EUNSUPPORTED (unknown template, unsupported role)
 * or TRL_ENOMEM, with a message in err.
 */
#ifndef TRL_CHAT_TEMPLATE_H
#define TRL_CHAT_TEMPLATE_H

#include <stddef.h>

#include "trl.h"

typedef enum {
	CHAT_TEMPLATE_CHATML = 0,
	CHAT_TEMPLATE_QWEN25,
	CHAT_TEMPLATE_QWEN3,
	CHAT_TEMPLATE_LLAMA3,
	CHAT_TEMPLATE_LLAMA2,
	CHAT_TEMPLATE_MISTRAL,
	CHAT_TEMPLATE_GEMMA,
	CHAT_TEMPLATE_DEEPSEEK_V3,
	CHAT_TEMPLATE_LFM2,
	CHAT_TEMPLATE_COUNT
} ChatTemplateKind;

typedef struct ChatTemplate {
	ChatTemplateKind kind;
	const char *name; /* canonical name, static storage */
} ChatTemplate;

/* One message. Strings are NUL-terminated UTF-8 and borrowed, not copied.
 * reasoning_content is NULL when the message has none (absent or JSON null). */
typedef struct ChatMessage {
	const char *role;
	const char *content;
	const char *reasoning_content;
} ChatMessage;

/* enable_thinking as Qwen3 sees it: UNSET renders like Hugging Face when the
 * caller does not pass the variable (the same as ON). */
typedef enum {
	CHAT_THINKING_UNSET = 0,
	CHAT_THINKING_ON,
	CHAT_THINKING_OFF
} ChatThinking;

/* Zero-initialised options render without a generation prompt, with empty bos and
 * eos tokens (NULL reads as ""), and Qwen3's default thinking mode. */
typedef struct ChatRenderOptions {
	int add_generation_prompt;
	ChatThinking enable_thinking;
	const char *bos_token;
	const char *eos_token;
} ChatRenderOptions;

typedef struct ChatSpan {
	size_t begin, end; /* byte offsets into ChatRender.text, end exclusive */
	int message;       /* index of the assistant message it came from */
} ChatSpan;

typedef struct ChatRender {
	char *text; /* (len + 1), NUL-terminated */
	size_t len;
	ChatSpan *spans; /* (n_spans), in increasing order */
	int n_spans;
	size_t cap;   /* internal: bytes allocated for text */
	int span_cap; /* internal: spans allocated */
} ChatRender;

/* Sets *ct from a template name (case-insensitive) or a Jinja template source.
 * An unrecognised string is TRL_EUNSUPPORTED with a message listing the known
 * names. */
int chat_template_find(ChatTemplate *ct, const char *name_or_jinja, TrlErr *err);

/* The known names, comma-separated, for messages and --help. */
const char *chat_template_names(void);

/* Renders msgs[0..n) into out (which must be zeroed or freed before reuse).
 * On failure out is left empty. */
int chat_render(const ChatTemplate *ct, const ChatMessage *msgs, int n,
                const ChatRenderOptions *o, ChatRender *out, TrlErr *err);

/* Releases what chat_render allocated and zeroes out; safe on a zeroed struct. */
void chat_render_free(ChatRender *out);

/* Normalises a Jinja template source as described above into a NUL-terminated
 * heap string (free with free()); NULL when out of memory. Exposed for tests. */
char *chat_template_normalize(const char *jinja);

#endif
