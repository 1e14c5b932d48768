"""Extract ComfyUI's core node method names and parameter lists (facts for nodes/data/comfy_methods.json).

    python scripts/extract_comfy_methods.py /path/to/ComfyUI > nodes/data/comfy_methods.json

Reads ComfyUI's ``nodes.py`` and ``comfy_extras/*.py`` with ``ast`` (nothing is imported or copied):
for every classic node class registered in a module's ``NODE_CLASS_MAPPINGS`` it records the
``FUNCTION`` name, the method's parameter names in order, the literal defaults, and whether it takes
``**kwargs``. Plexus's built-in nodes use the table to answer ComfyUI's method names
(``nodes.CLIPTextEncode().encode(clip, text)``).
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path


def class_table(tree: ast.Module) -> dict[str, dict]:
    out = {}
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        function = None
        methods = {}
        for item in cls.body:
            if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FUNCTION" for t in item.targets):
                if isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
                    function = item.value.value
            elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                methods[item.name] = item
        out[cls.name] = {"function": function, "methods": methods,
                         "bases": [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in cls.bases]}
    return out


def describe(method: ast.FunctionDef) -> dict:
    args = method.args
    positional = [a.arg for a in args.posonlyargs + args.args][1:]          # without self
    defaults: dict[str, object] = {}
    for name, default in zip(reversed(positional), reversed(args.defaults)):
        try:
            defaults[name] = ast.literal_eval(default)
        except ValueError:
            defaults[name] = None
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        positional.append(arg.arg)
        if default is not None:
            try:
                defaults[arg.arg] = ast.literal_eval(default)
            except ValueError:
                defaults[arg.arg] = None
    return {"params": positional, "defaults": defaults, "var_keyword": args.kwarg is not None}


def mappings(tree: ast.Module) -> dict[str, str]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "NODE_CLASS_MAPPINGS" for t in node.targets):
            if isinstance(node.value, ast.Dict):
                for k, v in zip(node.value.keys, node.value.values):
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Name):
                        found[k.value] = v.id
    return found


def main(root: Path) -> dict:
    table = {}
    files = [root / "nodes.py", *sorted((root / "comfy_extras").glob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = class_table(tree)
        for node_id, class_name in mappings(tree).items():
            cls = classes.get(class_name)
            seen = set()
            function = None
            while cls is not None and class_name not in seen:     # FUNCTION / method may be inherited
                seen.add(class_name)
                function = function or cls["function"]
                if function and function in cls["methods"]:
                    table[node_id] = {"module": path.stem, "class": mappings(tree)[node_id],
                                      "function": function, **describe(cls["methods"][function])}
                    break
                class_name = cls["bases"][0] if cls["bases"] else None
                cls = classes.get(class_name)
    return dict(sorted(table.items()))


if __name__ == "__main__":
    json.dump(main(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=True)
    print()
