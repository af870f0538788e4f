"""The docs: README is the front door (short, its two set-up commands as they were), the reference
is a MkDocs site under docs/ that builds in strict mode, and every CLI flag and ComfyUI node input
is documented there."""

import ast
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from joint_core.cli import build_parser

from conftest import REPO

DOCS = REPO / "docs"
SETUP_COMMANDS = ('pip install . && joint score path/to/images/', 'pip install -e ".[dev]" && python -m pytest -q')


def test_readme_is_the_front_door():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for command in SETUP_COMMANDS:
        assert f"```bash\n{command}\n```" in text, command
    assert "\n## The default model\n" in text        # the default model's numbers go under it
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).exists(), f"README links to {link}, which does not exist"
    for page in ("python-api.md", "cli.md", "comfyui.md", "diffusers.md", "datasets.md", "models.md",
                 "training.md", "benchmarks.md", "default-model.md"):
        assert f"(docs/{page})" in text, f"README does not link docs/{page}"


def test_every_page_is_in_the_site():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert [p for p in pages if f": {p}" not in nav] == []


def test_mkdocs_builds_the_site_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("JOINT_CI"):
            pytest.fail("MkDocs is not installed; CI must build the docs (pip install -e '.[dev]')")
        pytest.skip("MkDocs is not installed (it comes with the dev extra)")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "python-api" / "index.html").is_file()
    api = (tmp_path / "site" / "python-api" / "index.html").read_text(encoding="utf-8")
    assert "NaturalnessScorer" in api and "from_pretrained" in api   # the reference came from docstrings


def _documented(page: str, flag: str) -> bool:
    return re.search(re.escape(flag) + r"(?![\w-])", page) is not None


def test_every_cli_flag_is_documented():
    page = (DOCS / "cli.md").read_text(encoding="utf-8") + (DOCS / "datasets.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert set(commands) == {"score", "filter", "merge", "report", "convert", "info"}
    missing = []
    for name, sub in commands.items():
        assert f"joint {name}" in page, f"joint {name} is not documented"
        for action in sub._actions:
            missing += [f"joint {name} {o}" for o in action.option_strings
                        if o.startswith("--") and o != "--help" and not _documented(page, o)]
    assert missing == [], "CLI flags missing from docs/cli.md: " + ", ".join(missing)


def _node_inputs():
    """(display class, input names) of every ComfyUI node, read from comfyui_joint/nodes.py."""
    tree = ast.parse((REPO / "comfyui_joint" / "nodes.py").read_text(encoding="utf-8"))
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        method = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "INPUT_TYPES"), None)
        if method is None:
            continue
        names = set()
        for node in ast.walk(method):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value in ("required", "optional") and isinstance(v, ast.Dict):
                        names |= {key.value for key in v.keys if isinstance(key, ast.Constant)}
        yield cls.name, names


def test_every_node_input_is_documented():
    page = (DOCS / "comfyui.md").read_text(encoding="utf-8")
    nodes = dict(_node_inputs())
    assert len(nodes) == 5 and all(nodes.values())
    missing = [f"{cls}.{name}" for cls, names in nodes.items() for name in sorted(names) if f"`{name}`" not in page]
    assert missing == [], "node inputs missing from docs/comfyui.md: " + ", ".join(missing)
