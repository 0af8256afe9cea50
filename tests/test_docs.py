"""The README and docs/ cannot drift from the code: every ```yaml block in them is validated like a
sweep file, every ```yaml cluster block is checked against the cluster launcher files, every ```python
block compiles and imports what exists, and every relative link points to an existing file (and heading).

A ```yaml block with ``name`` and ``methods`` is a whole sweep file: it is written to a file and loaded
with ``ablate.spec.load_sweep`` from the repository root (so relative paths resolve as for a user who
runs the commands there). Any other ```yaml block is a fragment of a sweep file: it is merged over the
minimal sweep ``{name: doc, methods: [{method: simpo}]}`` (its keys win) and loaded the same way, so
the schema (unknown keys, types, ranges) and the semantic checks (hyperparameters, search spaces,
metrics, DeepSpeed) both apply. A block that is not a sweep says so in its fence: ```yaml cluster is
an excerpt of cluster.yaml or cluster-local.yaml."""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ablate import spec as spec_mod
from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MINIMAL_SWEEP = {"name": "doc", "methods": [{"method": "simpo"}]}
CLUSTER_FILES = ("cluster.yaml", "cluster-local.yaml")
# Pages written on other branches at the same time (issue 16); links to them may dangle until those
# branches are merged. Remove a name here once its page is in the repository.
WRITTEN_ELSEWHERE = {"docs/gpu-check.md"}
README_MAX_BYTES = 12_000  # a front page: what ablate is, set-up, a first sweep, links; the rest in docs/
IMAGE_MAX_BYTES = 200_000


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    info: list[str]  # the fence's info string, split: ["yaml"], ["yaml", "cluster"], ["python"], ...
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The ``` fenced blocks of a Markdown page, with their info strings."""
    blocks, opened, body = [], None, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if opened is None and stripped.startswith("```"):
            opened, body = (number, stripped[3:].split()), []
        elif opened is not None and stripped == "```":
            blocks.append(Block(page, opened[0], opened[1], "\n".join(body) + "\n"))
            opened = None
        elif opened is not None:
            body.append(line)
    assert opened is None, f"{page.relative_to(REPO)}:{opened[0]}: a ``` block is never closed"
    return blocks


BLOCKS = [b for page in PAGES for b in fenced_blocks(page)]
YAML_BLOCKS = [b for b in BLOCKS if b.info[:1] == ["yaml"]]
SWEEP_BLOCKS = [b for b in YAML_BLOCKS if len(b.info) == 1]
CLUSTER_BLOCKS = [b for b in YAML_BLOCKS if b.info[1:] == ["cluster"]]
PYTHON_BLOCKS = [b for b in BLOCKS if b.info[:1] == ["python"]]


def ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def test_the_docs_have_blocks_to_check():
    # Guards the extraction itself: a parser that found nothing would make every test below pass.
    assert len(SWEEP_BLOCKS) >= 10 and CLUSTER_BLOCKS and PYTHON_BLOCKS
    whole = [b for b in SWEEP_BLOCKS if {"name", "methods"} <= set(yaml.safe_load(b.text))]
    assert any(b.page.name == "README.md" for b in whole)  # the README's first sweep file


def test_every_yaml_block_says_what_it_is():
    unknown = [
        f"{b.where}: ```{' '.join(b.info)}" for b in YAML_BLOCKS if b.info[1:] not in ([], ["cluster"])
    ]
    assert not unknown, (
        "a ```yaml block is a sweep file or a fragment of one, or ```yaml cluster: " + "; ".join(unknown)
    )


@pytest.mark.parametrize("block", SWEEP_BLOCKS, ids=ids(SWEEP_BLOCKS))
def test_yaml_block_is_a_valid_sweep_file(block, tmp_path, monkeypatch):
    raw = yaml.safe_load(block.text)
    assert isinstance(raw, dict), f"{block.where}: a sweep file (or a fragment of one) is a YAML mapping"
    whole = {"name", "methods"} <= set(raw)
    path = tmp_path / "sweep.yaml"
    # A whole file is checked as written (comments, anchors and all); a fragment completes the minimal sweep.
    path.write_text(block.text if whole else yaml.safe_dump({**MINIMAL_SWEEP, **raw}), encoding="utf-8")
    monkeypatch.chdir(REPO)
    try:
        spec_mod.load_sweep(path)
    except spec_mod.SpecError as e:
        pytest.fail(
            f"{block.where}: {'sweep file' if whole else 'sweep-file fragment'} does not validate: {e}"
        )


def is_excerpt(part, whole) -> bool:
    """Whether every key and value of ``part`` is in ``whole`` (mappings compared key by key)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and is_excerpt(v, whole[k]) for k, v in part.items()
        )
    return part == whole


def merged(base: dict, part: dict) -> dict:
    out = dict(base)
    for k, v in part.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@pytest.mark.parametrize("block", CLUSTER_BLOCKS, ids=ids(CLUSTER_BLOCKS))
def test_cluster_block_is_an_excerpt_of_a_cluster_file(block):
    from ray.autoscaler._private.util import prepare_config, validate_config

    part = yaml.safe_load(block.text)
    assert isinstance(part, dict), f"{block.where}: a cluster file excerpt is a YAML mapping"
    files = {name: yaml.safe_load((REPO / name).read_text()) for name in CLUSTER_FILES}
    source = next((name for name, config in files.items() if is_excerpt(part, config)), None)
    assert source, (
        f"{block.where}: not an excerpt of {' or '.join(CLUSTER_FILES)}; copy it from the file again"
    )
    validate_config(prepare_config(merged(files[source], part)))  # Ray's own schema, offline


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=ids(PYTHON_BLOCKS))
def test_python_block_compiles_and_imports_what_exists(block):
    tree = compile(block.text, block.where, "exec", ast.PyCF_ONLY_AST)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{block.where}: {node.module} has no {', '.join(missing)}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (``_`` and ``-`` kept), spaces to ``-``."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")  # repeats get -1, -2, ...
        seen[base] = seen.get(base, 0) + 1
    return out


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?: \"[^\"]*\")?\)")


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # no http:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_point_to_existing_files_and_headings(page):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        relative = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        if not path.exists():
            if relative not in WRITTEN_ELSEWHERE:
                broken.append(f"{target}: no such file")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {relative}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_is_a_front_page():
    readme = REPO / "README.md"
    assert readme.stat().st_size <= README_MAX_BYTES, "move reference material from README.md to docs/"
    images = [t for t in relative_links(readme) if t.endswith(".png")]
    assert images, "the README shows a report"
    for image in images:
        assert (REPO / image).stat().st_size <= IMAGE_MAX_BYTES, f"{image}: keep the repository small"


@pytest.mark.parametrize("page", ["README.md", "docs/objectives.md"])
def test_objective_defaults_in_the_docs_are_the_signatures(page):
    """The objectives tables' "hyperparameters (default)" column says what the objective functions'
    signatures say (their keyword defaults, the one place defaults are written)."""
    from ablate.losses import LOSSES

    rows = {}
    for line in (REPO / page).read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # not an escaped \|
        name = cells[0].strip("`")
        if name in LOSSES and len(cells) >= 3:
            rows[name] = re.findall(r"([a-z_]+)(?: \([^)]*\))? (true|false|-?[\d.]+)\b", cells[2])
    assert set(rows) == set(LOSSES), f"{page}: the objectives table lists {sorted(rows)}"
    for method, pairs in rows.items():
        written = {k: v == "true" if v in ("true", "false") else float(v) for k, v in pairs}
        assert written == LOSSES[method].defaults, f"{page}: {method}'s defaults"
