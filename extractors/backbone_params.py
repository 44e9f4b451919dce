"""A backbone's declared parameters, read from its module's source without importing it: the backbone modules
import torch, and the workflow checks every feature set's parameters while it plans.

A built-in backbone is the class of ``extractors/backbones/*.py`` whose ``name`` is the backbone's name; a plugin
is the class its entry point (group ``avzsl.backbones``) names, found on ``sys.path``. The class's
``declared_params`` (calls of :mod:`extractors.params` on literals and the module's literal constants) give names,
types and allowed values; a plugin with ``default_params`` alone gives names only; a class with neither, or one whose
source is not found, is checked when extraction builds it.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from extractors.feature_sets import BackboneError
from extractors.params import VOCABULARY, Param, ParamError, check_values
from extractors.weights import RESERVED, file_param_keys

ENTRY_POINT_GROUP = "avzsl.backbones"
BUILTIN_FOLDER = Path(__file__).parent / "backbones"


def declared_params(name: str) -> dict[str, Param] | None:
    """The parameters backbone ``name`` declares; None when only building it can tell."""
    builtin = _builtin_classes()
    if name in builtin:
        return builtin[name]
    plugins = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name not in plugins:
        raise BackboneError(f"unknown backbone {name!r}; known: {sorted(set(builtin) | set(plugins))} "
                            f"(plugins register in the entry-point group {ENTRY_POINT_GROUP!r})")
    module, _, cls = plugins[name].value.partition(":")
    source = _module_source(module)
    return None if source is None else _classes(source, by="class").get(cls)


def check_backbone_params(backbone: str, params: dict, where: str) -> None:
    """``params`` of ``backbone`` as the workflow gives them (weight files may come as ``url`` / ``<param>_url``
    with their digests): one line naming ``<where>.params.<key>`` and what is allowed, else nothing."""
    try:
        declared = declared_params(backbone)
    except BackboneError as e:
        raise BackboneError(f"{where}.backbone: {e}") from None
    if declared is None:
        return
    fetched = file_param_keys(params)
    for param, (url_key, _) in fetched.items():
        if param not in declared:
            raise BackboneError(f"{where}.params.{url_key}: backbone {backbone!r} has no file parameter {param!r}; "
                                f"known: {', '.join(sorted(declared))}")
    given = {k: v for k, v in params.items() if k not in set(RESERVED).union(*fetched.values())}
    try:
        check_values(declared, given, f"{where}.params", f"backbone {backbone!r}")
    except ParamError as e:
        raise BackboneError(str(e)) from None


@cache
def _builtin_classes() -> dict[str, dict[str, Param] | None]:
    out = {}
    for path in sorted(BUILTIN_FOLDER.glob("*.py")):
        out.update(_classes(path.read_text(), by="name"))
    return out


def _module_source(module: str) -> str | None:
    """The source of ``module`` from the first ``sys.path`` entry that holds it (nothing is imported)."""
    relative = Path(*module.split("."))
    for entry in sys.path:
        for candidate in (Path(entry or ".") / f"{relative}.py", Path(entry or ".") / relative / "__init__.py"):
            if candidate.is_file():
                return candidate.read_text()
    return None


def _classes(source: str, by: str) -> dict[str, dict[str, Param] | None]:
    """The declared parameters of the classes in ``source``: the registered ones (``@register``) by their ``name``
    attribute (``by="name"``), or every class by its class name."""
    tree = ast.parse(source)
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        body = {}
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                body[stmt.targets[0].id] = stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                body[stmt.target.id] = stmt.value
        key = node.name
        if by == "name":
            registered = any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list)
            if not registered or not isinstance(body.get("name"), ast.Constant):
                continue
            key = body["name"].value
        out[key] = _declaration(body, constants)
    return out


def _declaration(body: dict[str, ast.expr], constants: dict) -> dict[str, Param] | None:
    if "declared_params" in body:
        return _evaluate(body["declared_params"], constants)
    if "default_params" in body:
        try:
            names = ast.literal_eval(body["default_params"])
        except ValueError:
            return None
        return {k: _any_value(v) for k, v in names.items()}
    return None


def _any_value(default) -> Param:
    """A parameter known by name only: any value (null included) passes."""
    return Param("any", default, nullable=True)


def _evaluate(node: ast.expr, constants: dict):
    """A declaration's value: literals, the module's literal constants and calls of the :mod:`extractors.params`
    vocabulary; anything else is an error (the declaration must stay readable without running the module)."""
    if isinstance(node, ast.Dict):
        return {_evaluate(k, constants): _evaluate(v, constants) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_evaluate(e, constants) for e in node.elts)
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in VOCABULARY:
        args = [_evaluate(a, constants) for a in node.args]
        kwargs = {kw.arg: _evaluate(kw.value, constants) for kw in node.keywords}
        return VOCABULARY[node.func.id](*args, **kwargs)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise BackboneError(f"a backbone's declared_params may hold only literals, module constants and the "
                            f"extractors.params vocabulary; line {node.lineno}: {ast.unparse(node)}") from None

