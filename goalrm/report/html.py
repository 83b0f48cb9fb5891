"""HTML pieces for the report: one self-contained page, images inlined as base64 PNG."""

import base64
from html import escape

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
img { max-width: 100%; height: auto; }
.meta { color: #666; } .note { color: #666; font-size: 0.9em; }
table.metrics { border-collapse: collapse; } table.metrics tr:nth-child(even) { background: #f5f5f5; }
table.metrics td { padding: 3px 16px 3px 6px; } table.metrics td:last-child { font-family: monospace; font-size: 1.05em; text-align: right; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.sample { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }
.prompt { color: #555; white-space: pre-wrap; font-family: monospace; font-size: 15px; margin: 0.3em 0 0.6em; }
.heat { font-family: monospace; font-size: 15px; white-space: pre-wrap; line-height: 2.1; margin: 0.2em 0 0.8em; }
.tok { padding: 2px 1px; border-radius: 2px; }
.texts { flex: 1 1 420px; min-width: 0; }
.tok.first-error { outline: 2px solid #000; outline-offset: 1px; font-weight: bold; }
.tok.same-position { outline: 1px dashed #000; outline-offset: 1px; }
.label { font-weight: 600; }
"""


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def metrics_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="metrics">{body}</table>'


def token_heatmap(tokens: list[str], qs: list[float], colours: list[str], marks: dict[int, str]) -> str:
    """Tokens on a background coloured by Q; `marks` maps a token index to a CSS class and hover note."""
    spans = []
    for i, (tok, q, colour) in enumerate(zip(tokens, qs, colours)):
        cls, note = marks.get(i, ("", ""))
        title = f"Q = {q:+.3f}" + (f" ({note})" if note else "")
        text = escape(tok).replace("\n", "↵\n")
        spans.append(f'<span class="tok {cls}" style="background:{colour}" title="{escape(title)}">{text}</span>')
    return f'<div class="heat">{"".join(spans)}</div>'


def section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def page(title: str, meta: str, sections: list[str]) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1><p class=\"meta\">{meta}</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
