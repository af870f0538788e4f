"""Static checks CI runs with the tests: the linter the project configures, and that no code
needs a newer Python than pyproject.toml declares (only one Python is installed on our machines,
so this is how the declared range is kept honest)."""

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE = ["joint_core", "comfyui_joint", "diffusers_hook", "train", "benchmarks", "examples", "tests", "__init__.py"]


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed; it comes with the dev extra: pip install -e '.[dev]'")
    return exe


def declared_minimum_python() -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^requires-python\s*=\s*">=\s*(\d+\.\d+)"', text, re.M)
    assert m, "pyproject.toml must declare requires-python = \">=X.Y\""
    return m.group(1)


def test_ruff_finds_nothing():
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_code_needs_a_newer_python_than_declared():
    target = declared_minimum_python()
    out = subprocess.run([_tool("vermin"), f"-t={target}-", "--no-tips", "--violations", "--eval-annotations",
                          "--backport", "dataclasses", "--backport", "typing", *CODE],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, f"code needs a newer Python than requires-python >={target}:\n{out.stdout}{out.stderr}"


def test_one_version_everywhere():
    from importlib.metadata import version

    import joint_core

    assert 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert version("joint-naturalness") == joint_core.__version__
    out = subprocess.run([sys.executable, "-m", "joint_core", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"joint {joint_core.__version__}"


# the house: joint_core is the ground floor; the faces stand on it and not on each other
ALLOWED = {
    "joint_core": set(),
    "comfyui_joint": {"joint_core"},
    "diffusers_hook": {"joint_core"},
    "train": {"joint_core"},
}


def _our_imports(path: Path) -> set:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


def test_imports_point_one_way():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for target in _our_imports(path) - allowed - {package}:
                wrong.append(f"{path.relative_to(REPO)} imports {target}")
    assert not wrong, "arrows must point to joint_core only:\n" + "\n".join(wrong)


def test_package_data_ships_every_data_file_of_the_core():
    """The report's CSS/JS and the shipped model are files, not Python: pyproject's package-data
    must name them or a wheel would ship a report without its style and script."""
    import fnmatch

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^\[tool\.setuptools\.package-data\]\n(.*?)(?=^\[)', text, re.S | re.M)
    assert m, "pyproject.toml has no [tool.setuptools.package-data]"
    core = re.search(r'^joint_core = \[(.*?)\]', m.group(1), re.S | re.M)
    assert core, "package-data names no joint_core files"
    globs = re.findall(r'"([^"]+)"', core.group(1))
    data = [p.relative_to(REPO / "joint_core").as_posix() for p in (REPO / "joint_core").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert any(d.startswith("report/") for d in data)
    missing = [d for d in data if not any(fnmatch.fnmatch(d, g) for g in globs)]
    assert not missing, f"pyproject.toml's package-data does not ship {missing}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_graph() -> dict:
    """joint_core's modules -> the joint_core modules each imports (module level or not), with
    relative imports resolved; ``from pkg import name`` counts as importing ``pkg.name`` when
    that is a module. Importing ``a.b.c`` runs the ``__init__`` of ``a.b`` first, so it counts as
    importing ``a.b`` too - unless the importer lives inside ``a.b`` (whose ``__init__`` is then
    already running)."""
    import ast

    modules = {_module_name(p): p for p in (REPO / "joint_core").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[:len(base) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                parts = t.split(".")
                for i in range(2, len(parts) + 1):   # a.b, a.b.c (not the root package)
                    up = ".".join(parts[:i])
                    if up in modules and up != name and not name.startswith(up + "."):
                        deps.add(up)
        graph[name] = deps
    return graph


def _cycle(graph: dict):
    """One import cycle of ``graph`` as a list of modules, or None. A package's ``__init__``
    importing its own submodules is how packages re-export, not a cycle, unless a submodule
    imports the package back."""
    state = {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, stack)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_no_import_cycle_inside_joint_core():
    graph = _core_graph()
    assert "joint_core.scorer" in graph and "joint_core.stream.job" in graph
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_planted_cycle():
    graph = _core_graph()
    # the cycle this test was written for: the scorer imported stream.loader (inside a function),
    # which runs joint_core/stream/__init__.py, which imports stream.job, which imports the scorer
    graph["joint_core.scorer"] = graph["joint_core.scorer"] | {"joint_core.stream.loader", "joint_core.stream"}
    assert _cycle(graph) is not None


def test_the_scorer_never_imports_stream():
    """Everything the scorer imports, transitively, stays out of joint_core.stream (which builds
    on the scorer)."""
    graph = _core_graph()
    seen, todo = set(), ["joint_core.scorer"]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    assert not {m for m in seen if m.startswith("joint_core.stream")}, sorted(seen)


def test_imports_sit_at_the_top_of_joint_core_modules():
    """Imports inside functions hide dependencies (and hid a cycle); optional dependencies are
    imported through joint_core.extras.require, which names the extra to install."""
    import ast

    inside = []
    for path in sorted((REPO / "joint_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{path.relative_to(REPO)}:{sub.lineno}" for sub in ast.walk(node)
                           if isinstance(sub, (ast.Import, ast.ImportFrom))]
    assert not inside, "imports inside functions (move them to the top, or use extras.require):\n" + "\n".join(inside)


@pytest.mark.parametrize("old, name, new", [
    ("joint_core.checkpoint", "convert_official", "joint_core.official"),
    ("joint_core.checkpoint", "read_logistic_params", "joint_core.official"),
    ("joint_core.backbones", "torchvision_swin_to_timm", "joint_core.official"),
])
def test_moved_names_still_import_from_their_old_home_with_a_warning(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}.{name}"):
        found = getattr(module, name)
    assert found is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018
