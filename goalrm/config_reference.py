"""docs/configuration.md, generated from the config dataclasses: every key, its type, default and the
comment beside it in the source. `python -m goalrm.config_reference > docs/configuration.md` rewrites
it; tests/test_docs.py fails when it is stale."""

import dataclasses
import inspect
import io
import tokenize
import types
import typing

from goalrm.config import Config, ScoreConfig

HEADER = """# Configuration reference

Generated from the dataclasses in `goalrm/config.py` and the modules they import
(`python -m goalrm.config_reference > docs/configuration.md`); do not edit by hand. A config is one
YAML file with the sections below; every key is checked before Ray starts, and an unknown key is an
error that lists the known ones. `goalrm/configs/demo.yaml` is a complete example.
"""


def _comments(cls) -> dict[str, str]:
    """Each field's comment in CLS's source: the one ending its line, else the comment lines above it."""
    out, field, above = {}, None, []
    for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline):
        if tok.type == tokenize.COMMENT and field is None and tok.start[1] == 4:
            above.append(tok.string.lstrip("# ").strip())  # a comment line of its own, before a field
        elif tok.type == tokenize.NAME and tok.start[1] == 4 and field is None:
            field = tok.string  # a field's name starts its line, indented once
            if above:
                out[field] = " ".join(above)
        elif tok.type == tokenize.COMMENT and field is not None:
            out[field] = tok.string.lstrip("# ").strip()
        elif tok.type == tokenize.NEWLINE:
            field, above = None, []
    return out


def _type(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if args:
        return f"{typing.get_origin(tp).__name__}[{', '.join('...' if a is Ellipsis else _type(a) for a in args)}]"
    return "None" if tp is type(None) else tp.__name__


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    return "null" if value is None else repr(value).replace("'", '"') if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _table(cls, prefix: str) -> list[str]:
    hints, comments = typing.get_type_hints(cls), _comments(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = next((t for t in typing.get_args(tp) if dataclasses.is_dataclass(t)), tp)
        if dataclasses.is_dataclass(inner):
            nested.append((inner, f"{prefix}{f.name}.", comments.get(f.name, "")))
        cells = (f"`{prefix}{f.name}`", f"`{_type(tp)}`", f"`{_default(f)}`", comments.get(f.name, ""))
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    out = ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for sub, sub_prefix, note in nested:
        out += [f"### `{sub_prefix[:-1]}`", "", *([note, ""] if note else []), *_table(sub, sub_prefix)]
    return out


def config_reference() -> str:
    lines = [HEADER]
    for f in dataclasses.fields(Config):
        section = typing.get_type_hints(Config)[f.name]
        lines += [f"## `{f.name}`", "", *_table(section, f"{f.name}.")]
    lines += ["## `goalrm score` flags", "", "The names are the flags' (`--batch-size` for `batch_size`).", "", *_table(ScoreConfig, "")]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
