"""The README and docs/ say what the code does: every `goalrm` command in their bash blocks parses with
the CLI as printed (and the short ones that need no Ray run, in a temp dir), the `ray_jobs/` entrypoints'
flags parse too, the YAML examples are valid configs and sweep files, the repository files, make
targets and links they name exist."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from goalrm.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_SECTIONS = {"model", "data", "loss", "train"}
SWEEP_SECTIONS = {"space", "tune"}
SHELL_STOPS = {"&", "&&", "|", ";", ">", ">>"}
REPO_PREFIXES = ("goalrm/configs/", "tune_spaces/", "serve_configs/", "ray_jobs/", "bench/", "docs/")
OTHER_TOOLS_FLAGS = {"--working-dir", "--remote_rm_url"}  # ray job submit's, OpenRLHF's
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    return FENCE.findall(path.read_text())


def bash_lines(body: str) -> tuple[list[str], list[str]]:
    """The commands of a bash block (continuations joined, comment-only lines dropped), and its heredoc bodies."""
    commands, heredocs, lines = [], [], iter(body.splitlines())
    for line in lines:
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines, "").strip()
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        commands.append(line)
        if m := re.search(r"<<-?\s*'?(\w+)'?", line):
            heredocs.append("\n".join(iter(lambda: next(lines, m.group(1)), m.group(1))))
    return commands, heredocs


def doc_commands() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for lang, body in fenced_blocks(path):
            if lang in ("bash", "sh", "shell"):
                out += [(path.relative_to(ROOT).as_posix(), c) for c in bash_lines(body)[0]]
    return out


def argv_of(line: str) -> list[str]:
    """The argv of a shell line, up to the first operator (`&`, `|`, `>` ...)."""
    words = shlex.split(line, comments=True)
    return words[: next((i for i, w in enumerate(words) if w in SHELL_STOPS), len(words))]


def subparser(path: list[str]):
    """The argparse parser of `goalrm A B` for path [A, B]."""
    p = build_parser()
    for name in path:
        p = p._subparsers._group_actions[0].choices[name]
    return p


def flags_of(p) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


def command_path(argv: list[str]) -> list[str]:
    """The subcommand names at the start of a goalrm argv: ['data', 'synthetic'], ['train'], or []."""
    path, p = [], build_parser()
    for word in argv:
        subs = p._subparsers._group_actions[0].choices if p._subparsers else {}
        if word not in subs:
            break
        path.append(word)
        p = subs[word]
    return path


def check_parses(argv: list[str], where: str) -> None:
    """ARGV (after `goalrm`) must parse: every flag exists, every choice and number is valid."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        assert e.code == 0, f"{where}: `goalrm {shlex.join(argv)}` does not parse: {err.getvalue().strip().splitlines()[-1:]}"
    check_flags_exist(shlex.join(["goalrm", *argv]), where)  # argparse would take an abbreviation


def check_flags_exist(line: str, where: str) -> None:
    """For synopsis lines (`[--flag X]`, `<...>`) and inline mentions: the flags named exist for the command."""
    path = command_path(line.split()[1:])
    assert path, f"{where}: `{line}` names no goalrm command"
    known = flags_of(subparser(path))
    missing = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)) - known)
    assert not missing, f"{where}: `{line}`: goalrm {' '.join(path)} has no {', '.join(missing)}"


def check_repo_files(argv: list[str], where: str) -> None:
    for word in argv:
        if word.startswith(REPO_PREFIXES) and not any(c in word for c in "*{"):
            assert (ROOT / word).exists(), f"{where}: {word} does not exist"


def check_config_files(argv: list[str], where: str) -> None:
    """`--config` and `--space` files of the repository load with every key checked."""
    from goalrm.config import load_config
    from goalrm.tune.space import load_space

    opts = dict(zip(argv, argv[1:]))
    path = command_path(argv)
    config = opts.get("--config")
    if path[:1] in (["train"], ["tune"]) and config and (ROOT / config).exists():
        base = load_config(str(ROOT / config))
        if path == ["tune"] and "--space" in opts:
            load_space(str(ROOT / opts["--space"]), base.to_dict())


def goalrm_lines() -> list[tuple[str, str]]:
    return [(doc, line) for doc, line in doc_commands() if line.startswith("goalrm ")]


def test_docs_have_goalrm_commands():
    lines = goalrm_lines()
    assert len(lines) > 30
    assert {d for d, _ in lines} >= {"README.md", "docs/scoring.md", "docs/sweeps.md", "docs/data.md"}


@pytest.mark.parametrize("doc,line", goalrm_lines(), ids=lambda v: v[:60] if isinstance(v, str) else None)
def test_goalrm_command_parses(doc, line):
    where = f"{doc}: {line}"
    if re.search(r"\[--|<\w", line):  # a synopsis: [--flag VALUE], <placeholder>
        check_flags_exist(line, where)
        return
    argv = argv_of(line)[1:]
    check_parses(argv, where)
    check_repo_files(argv, where)
    check_config_files(argv, where)


def all_goalrm_flags(p=None) -> set[str]:
    p = p or build_parser()
    subs = p._subparsers._group_actions[0].choices.values() if p._subparsers else ()
    return flags_of(p).union(*(all_goalrm_flags(s) for s in subs))


def test_inline_mentions_name_real_flags():
    """Prose like `goalrm score --gpus-per-scorer 1` names flags that exist for that command, and a bare
    `--flag` in prose is a goalrm flag, a bench script's, or one of another tool's that the docs name."""
    bench = {f for script in (ROOT / "bench").glob("*.py") for f in re.findall(r'add_argument\(\s*"(--[\w-]+)"', script.read_text())}
    known = all_goalrm_flags() | bench | OTHER_TOOLS_FLAGS
    for path in DOCS:
        text = FENCE.sub("", path.read_text())
        for span in re.findall(r"`(goalrm [a-z][^`]*)`", text):
            if "--" in span and command_path(span.split()[1:]):
                check_flags_exist(span, f"{path.name}: `{span}`")
        for flag in re.findall(r"`(--[a-z][\w-]*)", text):
            assert flag in known, f"{path.name}: `{flag}` is no flag of goalrm, bench/ or {sorted(OTHER_TOOLS_FLAGS)}"


def test_ray_jobs_entrypoints_parse():
    """`ray job submit ... -- python ray_jobs/X.py FLAGS`, in bash or Python: the flags are goalrm X's."""
    found = 0
    for path in DOCS:
        for lang, body in fenced_blocks(path):
            for m in re.finditer(r"python (ray_jobs/(\w+)\.py)([^\"'\n]*)", body):
                where = f"{path.name}: {m.group(0)}"
                assert (ROOT / m.group(1)).exists(), where
                check_parses([m.group(2), "--address", "auto", *argv_of(m.group(3))], where)
                found += 1
    assert found >= 4


def test_other_commands_name_real_files_and_targets():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for doc, line in doc_commands():
        argv = argv_of(line)
        while argv and re.match(r"^[A-Z_]+=", argv[0]):  # OMP_NUM_THREADS=1 python ...
            argv = argv[1:]
        if argv[:1] == ["make"]:
            assert set(argv[1:]) <= targets, f"{doc}: `{line}`: no such make target"
        elif argv[:1] and argv[0].endswith("python") or argv[:1] == ["serve"] or argv[:2] == ["ray", "job"]:
            check_repo_files(argv, f"{doc}: {line}")


def yaml_examples() -> list[tuple[str, dict]]:
    out = []
    for path in DOCS:
        for lang, body in fenced_blocks(path):
            texts = [body] if lang == "yaml" else bash_lines(body)[1] if lang == "bash" else []
            out += [(path.name, yaml.safe_load(t)) for t in texts]
    return [(doc, data) for doc, data in out if isinstance(data, dict)]


def test_yaml_examples_are_valid_configs_and_sweeps():
    from goalrm.config import Config, config_from_dict
    from goalrm.tune.space import parse_space

    checked = 0
    for doc, data in yaml_examples():
        if set(data) <= CONFIG_SECTIONS:
            config_from_dict(data, f"{doc}: {data}")
            checked += 1
        elif set(data) <= SWEEP_SECTIONS:
            parse_space(data, Config().to_dict(), doc)
            checked += 1
    assert checked >= 8


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen, out = {}, set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", path.read_text()), re.M):
        slug = _slug(heading)
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_links_resolve():
    docs = [*DOCS, ROOT / "bench" / "RESULTS.md"]
    for path in docs:
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", path.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            assert dest.exists(), f"{path.name}: link to {target}: no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{path.name}: link to {target}: no such heading in {dest.name}"


def _runnable(argv: list[str]) -> bool:
    """No Ray, seconds: data commands and help."""
    return command_path(argv)[:1] == ["data"] or "--help" in argv or "-h" in argv


def test_short_commands_run_as_written(tmp_path, monkeypatch):
    """The data and help commands, in a fresh folder, in order; ../shared is the repository's neighbour."""
    from goalrm.cli import main

    work = tmp_path / "goalrm"
    work.mkdir()
    if SHARED.exists():
        (tmp_path / "shared").symlink_to(SHARED)
    monkeypatch.chdir(work)
    ran, done = 0, set()
    for doc, line in goalrm_lines():
        argv = argv_of(line)[1:]
        if re.search(r"\[--|<\w", line) or not _runnable(argv) or line in done:
            continue
        inputs = [v for k, v in zip(argv, argv[1:]) if k == "--input"]
        if any(not Path(v).exists() for v in inputs):  # ../shared/data is not on every machine
            continue
        done.add(line)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except SystemExit as e:  # --help
            code = e.code
        assert code == 0, f"{doc}: `{line}` exited with {code}"
        ran += 1
    assert ran >= 5
    assert (work / "runs" / "pairs.jsonl").exists()
