#!/usr/bin/python3
"""render_chat.py - renders every (template, conversation, add_generation_prompt
[, enable_thinking]) combination with Jinja2 exactly as Hugging Face's
apply_chat_template does, one JSON object per line, for tests/chat_check.c.

Usage: render_chat.py TEMPLATE_DIR CONVERSATIONS.jsonl OUT.jsonl
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Built-in renderer name -> template file, in the order the checker runs them.
TEMPLATES = [
    ("chatml", "chatml.jinja"),
    ("qwen2.5", "qwen2.5.jinja"),
    ("qwen3", "qwen3.jinja"),
    ("llama3", "llama3.jinja"),
    ("llama2", "llama2-chat.jinja"),
    ("mistral", "mistral-instruct.jinja"),
    ("gemma", "gemma3.jinja"),
    ("deepseek-v3", "deepseek_v3.jinja"),
    ("lfm2", "lfm2.jinja"),
]
# Special tokens each family's tokenizer passes as bos_token / eos_token.
TOKENS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "qwen2.5": ("", "<|im_end|>"),
    "qwen3": ("", "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama2": ("<s>", "</s>"),
    "mistral": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
    "deepseek-v3": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "lfm2": ("<|startoftext|>", "<|im_end|>"),
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    tdir, conv_path, out_path = sys.argv[1:]
    env = make_env()
    convs = []
    with open(conv_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                convs.append(json.loads(line))
    with open(out_path, "w", encoding="utf-8") as out:
        for name, fname in TEMPLATES:
            with open(f"{tdir}/{fname}", encoding="utf-8") as f:
                template = env.from_string(f.read())
            bos, eos = TOKENS[name]
            thinking = [None, True, False] if name == "qwen3" else [None]
            for ci, conv in enumerate(convs):
                for agp in (False, True):
                    for think in thinking:
                        kw = dict(messages=conv["messages"], tools=None,
                                  documents=None, add_generation_prompt=agp,
                                  bos_token=bos, eos_token=eos)
                        if think is not None:
                            kw["enable_thinking"] = think
                        rec = dict(template=name, file=fname, conversation=ci,
                                   name=conv.get("name", ""),
                                   add_generation_prompt=agp,
                                   enable_thinking=think, bos_token=bos,
                                   eos_token=eos)
                        try:
                            rec["text"] = template.render(**kw)
                            rec["ok"] = True
                        except Exception as e:  # what apply_chat_template raises
                            rec["ok"] = False
                            rec["error"] = f"{type(e).__name__}: {e}"
                        out.write(json.dumps(rec, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
