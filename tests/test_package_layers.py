"""The package's layers (issue 10): every module under src/recfunnel imports, and no module imports
one of a layer above its own. Read statically from each module's source with `ast`: every `import`
and `from ... import` anywhere in the file (function-level and TYPE_CHECKING imports included), so
a lazy import that points up the stack is caught as surely as a top-level one.

Layers, bottom to top (a module may import its own layer and those below)::

    atomic, errors, settings, folder, artifacts   (and the package root)
    data, text                                     (text: an offline encoder of item texts; it
                                                    imports only atomic, and data-level code reads it)
    nn
    models
    train
    eval
    index
    run                                            (pipeline: the moved-names shim of run)
    recommender, explain
    funnel
    serve
    cli, bench                                     (the shells: nothing below may import them)
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import recfunnel

LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "atomic", "errors", "settings", "folder", "artifacts"),
    ("data", "text"),
    ("nn",),
    ("models",),
    ("train",),
    ("eval",),
    ("index",),
    ("run", "pipeline"),
    ("recommender", "explain"),
    ("funnel",),
    ("serve",),
    ("cli", "bench"),
)
RANK: dict[str, int] = {name: rank for rank, names in enumerate(LAYERS) for name in names}
SHELLS = ("cli", "bench")

SRC = Path(recfunnel.__file__).parent


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "recfunnel.run.fit"
    path: Path
    line: int
    target: str  # the imported recfunnel module, e.g. "recfunnel.bench.ctr"

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parent.parent)}:{self.line}"


def all_modules() -> list[pkgutil.ModuleInfo]:
    """Every module and package under src/recfunnel."""
    errors: list[str] = []
    mods = list(pkgutil.walk_packages(recfunnel.__path__, "recfunnel.", onerror=errors.append))
    assert not errors, f"packages that failed to import while walking: {errors}"
    return mods


def module_path(name: str) -> Path:
    parts = name.split(".")[1:]
    package = SRC.joinpath(*parts)
    return package / "__init__.py" if package.is_dir() else package.with_suffix(".py")


def layer_of(module: str) -> str:
    """'recfunnel.run.fit' -> 'run'; the package root -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_in(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, recfunnel module) of every import in `source`, the code of `module`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            # `from recfunnel import text` imports the submodule recfunnel.text
            targets = [
                f"{base}.{a.name}" if base == "recfunnel" and a.name in RANK else base for a in node.names
            ]
        else:
            continue
        out += [
            (node.lineno, t) for t in dict.fromkeys(targets) if t == "recfunnel" or t.startswith("recfunnel.")
        ]
    return sorted(out)


def imports_of(module: str) -> list[Import]:
    """The recfunnel modules `module` imports, wherever in its file the import statement stands."""
    path = module_path(module)
    source = path.read_text(encoding="utf-8")
    return [
        Import(module, path, line, t) for line, t in imports_in(source, module, path.name == "__init__.py")
    ]


MODULES = [m.name for m in all_modules()]


def upward_imports() -> list[Import]:
    bad = []
    for module in MODULES:
        for imp in imports_of(module):
            if RANK[layer_of(imp.target)] > RANK[layer_of(module)]:
                bad.append(imp)
    return bad


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({layer_of(m) for m in MODULES} - set(RANK))
    assert not unplaced, f"top-level modules or packages with no layer: {unplaced} (add them to LAYERS)"


@pytest.mark.parametrize("module", [m for m in MODULES if not m.endswith(".__main__")])
def test_module_imports(module):
    importlib.import_module(module)


def test_no_module_imports_a_layer_above_its_own():
    lines = [
        f"{i.where}: {i.module} ({layer_of(i.module) or 'root'}) imports {i.target} ({layer_of(i.target)})"
        for i in upward_imports()
    ]
    assert not lines, "imports pointing up the layers:\n" + "\n".join(lines)


def test_no_library_module_imports_the_cli_or_the_bench():
    found = [
        f"{i.where}: {i.module} imports {i.target}"
        for m in MODULES
        if layer_of(m) not in SHELLS
        for i in imports_of(m)
        if layer_of(i.target) in SHELLS
    ]
    assert not found, "library modules importing a shell:\n" + "\n".join(found)


def test_the_checker_sees_function_level_relative_and_package_imports():
    src = (
        "from recfunnel.data import dataset\n"
        "import numpy\n"
        "def f():\n"
        "    import recfunnel.bench.ctr\n"
        "    from ..cli import app\n"
        "    from recfunnel import text, __version__\n"
        "    from . import base\n"
        "    if True:\n"
        "        from .seq.sasrec import SASRec\n"
    )
    assert imports_in(src, "recfunnel.models.mf") == [
        (1, "recfunnel.data"),
        (4, "recfunnel.bench.ctr"),
        (5, "recfunnel.cli"),
        (6, "recfunnel"),
        (6, "recfunnel.text"),
        (7, "recfunnel.models"),
        (9, "recfunnel.models.seq.sasrec"),
    ]
    assert imports_in("from . import fit", "recfunnel.run", is_package=True) == [(1, "recfunnel.run")]
    assert RANK[layer_of("recfunnel.cli")] > RANK[layer_of("recfunnel.models.mf")]
