"""The ranking key: one home (joint_core.ranking), one fallback, and the CLI's --sort / --top /
--by take a weighted mix as the Python API does."""

import ast
import re

import pytest

from joint_core.cli import build_parser, main
from joint_core.ranking import DEFAULT_BY, parse_by
from joint_core.stream import write_rows

from conftest import REPO

ROWS = [  # technical and rationality pull opposite ways; naturalness alone prefers c
    {"source": "a.png", "technical": 5.0, "rationality": 1.0, "naturalness": 2.0, "error": None},
    {"source": "b.png", "technical": 1.0, "rationality": 4.5, "naturalness": 2.5, "error": None},
    {"source": "c.png", "technical": 2.0, "rationality": 2.0, "naturalness": 4.0, "error": None},
    {"source": "d.png", "technical": 4.0, "rationality": 4.0, "naturalness": 1.5, "error": None},
]


def test_parse_by_reads_an_axis_or_a_mix():
    assert parse_by("naturalness") == "naturalness"
    assert parse_by(" technical=1, rationality=0.5 ") == {"technical": 1.0, "rationality": 0.5}
    for bad, why in [("beauty", "unknown score axis"), ("technical=x", "not a weight"),
                     ("technical=1,technical=2", "twice"), ("technical=0", "not all be zero"),
                     ("technical=-1", ">= 0"), ("technical=1,rationality", "AXIS=WEIGHT")]:
        with pytest.raises(ValueError, match=why) as e:
            parse_by(bad, "--sort")
        assert str(e.value).startswith("--sort: ")


def test_sort_and_by_take_a_mix_on_the_command_line(capsys):
    p = build_parser()
    assert p.parse_args(["score", "x.png", "--sort", "naturalness=1,technical=1"]).sort == \
        {"naturalness": 1.0, "technical": 1.0}
    assert p.parse_args(["filter", "s.csv", "--top", "1", "--by", "rationality"]).by == "rationality"
    with pytest.raises(SystemExit):
        p.parse_args(["score", "x.png", "--sort", "beauty"])
    assert "--sort: unknown score axis 'beauty'" in capsys.readouterr().err


@pytest.mark.parametrize("key, best", [("technical=1,rationality=1", "d.png"), ("technical", "a.png"),
                                       ("rationality=1", "b.png"), (None, "c.png")])
def test_filter_top_ranks_by_the_mix(tmp_path, capsys, key, best):
    scores = tmp_path / "s.csv"
    write_rows(str(scores), iter(ROWS))
    argv = ["filter", str(scores), "--mode", "list", "--top", "1"] + (["--by", key] if key else [])
    assert main(argv) == 0
    assert capsys.readouterr().out.split() == [best]


def _fallbacks(tree):
    """Where code spells a ranking fallback: a parameter default, a ranking field's default, an
    ``or`` fallback, a widget's default."""
    def nat(node):
        return isinstance(node, ast.Constant) and node.value == "naturalness"

    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            yield from (d.lineno for d in node.defaults + [k for k in node.kw_defaults if k] if nat(d))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and nat(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and re.search(r"(^|_)(by|ranking)$", t.id, re.I) for t in targets):
                yield node.lineno
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and any(nat(v) for v in node.values):
            yield node.lineno
        elif isinstance(node, ast.Dict):
            yield from (v.lineno for k, v in zip(node.keys, node.values)
                        if isinstance(k, ast.Constant) and k.value == "default" and nat(v))


def test_the_fallback_ranking_is_defined_once():
    """No module of the core or the faces spells the fallback out: they use ranking.DEFAULT_BY."""
    assert DEFAULT_BY == "naturalness"
    found = []
    for package in ("joint_core", "comfyui_joint", "diffusers_hook"):
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [f"{path.relative_to(REPO)}:{line}" for line in _fallbacks(tree)]
    assert [f for f in found if not f.startswith("joint_core/ranking.py")] == []
    assert len([f for f in found if f.startswith("joint_core/ranking.py")]) == 1
