"""Chat templates (Jinja from GGUF, Ollama's Go subset, plain fallback) and stop-string handling."""

from __future__ import annotations

import pytest

from iollm.runtime.backends import ChatMessage, StopMatcher
from iollm.runtime.templates import TemplateError, pick_template, render_go_template

LLAMA3 = """{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>

{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

{{ .Response }}<|eot_id|>"""


def test_go_template_from_an_ollama_modelfile() -> None:
    text = render_go_template(LLAMA3, [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")])
    assert text.startswith("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")
    assert "user<|end_header_id|>\n\nHi<|eot_id|>" in text
    assert text.endswith("assistant<|end_header_id|>\n\n<|eot_id|>")
    no_system = render_go_template(LLAMA3, [ChatMessage("user", "Hi")])
    assert "system" not in no_system


def test_go_template_range_and_trimming() -> None:
    source = "{{- range .Messages }}[{{ .Role }}] {{ .Content }}\n{{- end }}"
    text = render_go_template(source, [ChatMessage("user", "a"), ChatMessage("assistant", "b")])
    assert text == "[user] a[assistant] b"
    with pytest.raises(TemplateError):
        render_go_template("{{ if .System }}unterminated", [ChatMessage("user", "x")])


def test_jinja_and_plain_templates() -> None:
    jinja = pick_template(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}",
        None,
    )
    assert jinja.render([ChatMessage("user", "hi")], system="sys") == "<system>sys<user>hi<assistant>"
    plain = pick_template(None, None)
    assert plain.kind == "plain"
    assert plain.render([ChatMessage("user", "hi")]).endswith("User: hi\nAssistant:")
    assert pick_template("{{ .Prompt }}", None).kind == "go"
    assert pick_template("ignored {{ .Prompt }}", "{% if true %}x{% endif %}").kind == "jinja"


def test_stop_strings_never_leak_even_across_pieces() -> None:
    matcher = StopMatcher(["STOP", "\n\n"])
    out = []
    for piece in ["Hello wo", "rld ST", "OP and more"]:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            break
    assert "".join(out) == "Hello world " and stopped
    matcher = StopMatcher(["###"])
    text, stopped = matcher.feed("a#b#")
    assert text == "a#b" and not stopped
    assert matcher.flush() == "#"
