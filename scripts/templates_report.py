"""How many official workflow templates this Plexus checks and runs; which node types the rest lack.

Walks every template of the installed ``comfyui-workflow-templates-json`` package (its ``index.json``).
For each template whose node types Plexus registers, it converts the editor workflow to a prompt and
validates it as ``main.py check`` does, with an empty placeholder file for every model the workflow
names (from the nodes' ``properties.models`` and the loaders' file widgets). Rerun it after adding
nodes (other helpers add them in parallel)::

    .venv/bin/python scripts/templates_report.py                 # counts and the top missing types
    .venv/bin/python scripts/templates_report.py --write-docs    # also rewrite docs/templates.md
    .venv/bin/python scripts/templates_report.py --json          # machine-readable

``--run`` also executes, end to end, every template whose node types Plexus has and that either names
no model or names a model family Plexus loads (SD1.x, SD2.x, SDXL, SD3/3.5, FLUX.1): the model files its
loaders name are written as tiny random-weight files in the real layouts, its LoadImage inputs as small
generated images, its sizes and step counts shrunk (scripts/template_runner.py), each in a fresh folder.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from execution.errors import PlexusError  # noqa: E402
from execution.events import EventBus  # noqa: E402
from execution.executor import Engine  # noqa: E402
from execution.registry import NodeRegistry  # noqa: E402
from execution.workflow import workflow_to_prompt  # noqa: E402
from nodes import services  # noqa: E402
from nodes.registry import register_builtins  # noqa: E402
from nodes.spec import file_inputs  # noqa: E402
from storage.folders import Folders  # noqa: E402
from web.editor import package_dir  # noqa: E402
from web.template_catalog import assess, model_family, read_workflow  # noqa: E402

import template_runner  # noqa: E402  (scripts/, beside this file)

DOCS = ROOT / "docs" / "templates.md"
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
# The editor's model "directory" names that are older spellings of our folder kinds.
FOLDER_ALIASES = {"clip": "text_encoders", "unet": "diffusion_models"}


@dataclass
class Outcome:
    name: str
    title: str
    missing_types: list[str]
    unsupported_models: list[str]
    checked: bool = False
    check_errors: list[str] = field(default_factory=list)
    family: str | None = None        # the Plexus family its index tags name (web.template_catalog.model_family)
    ran: bool | None = None          # None: not attempted
    run_error: str = ""
    run_seconds: float = 0.0


def templates_dir() -> Path | None:
    return package_dir("comfyui_workflow_templates_json", "templates")


def index_entries(folder: Path) -> list[dict[str, Any]]:
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    return [entry for category in index for entry in category.get("templates") or []]


def _walk_nodes(graph: dict[str, Any]):
    yield from graph.get("nodes") or []
    for definition in (graph.get("definitions") or {}).get("subgraphs") or []:
        yield from _walk_nodes(definition)


def named_models(workflow: dict[str, Any]) -> set[tuple[str, str]]:
    """(folder, file name) of every model the workflow's nodes list in ``properties.models``."""
    found = set()
    for node in _walk_nodes(workflow):
        for model in (node.get("properties") or {}).get("models") or []:
            if isinstance(model, dict) and model.get("name") and model.get("directory"):
                folder = str(model["directory"]).split("/")[0]
                found.add((FOLDER_ALIASES.get(folder, folder), str(model["name"])))
    return found


def prompt_models(prompt: dict[str, Any], registry: NodeRegistry) -> set[tuple[str, str]]:
    """(folder, file) pairs the prompt's loaders name, from the folders their file lists declare."""
    found = set()
    for node in prompt.values():
        folders = file_inputs(registry.get(str(node.get("class_type"))))
        for name, value in (node.get("inputs") or {}).items():
            folder = folders.get(name)
            if folder and isinstance(value, str) and value:
                found.add((folder, value))
    return found


def write_placeholders(folders: Folders, models: set[tuple[str, str]]) -> None:
    for folder, name in models:
        if not name.lower().endswith(MODEL_SUFFIXES) or ".." in Path(name).parts:
            continue
        roots = folders.paths(folder) if folder in folders.kinds() else []
        if not roots:
            continue
        path = roots[0] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        folders.invalidate(folder)


def check_template(workflow: dict[str, Any], registry: NodeRegistry, engine: Engine, folders: Folders) -> list[str]:
    """`main.py check`'s verdict with placeholder models: [] when valid, else the error lines."""
    try:
        write_placeholders(folders, named_models(workflow))
        prompt = workflow_to_prompt(workflow, registry)
        write_placeholders(folders, prompt_models(prompt, registry))
        template_runner.write_inputs(prompt, folders)       # the JSON package ships no input images
    except PlexusError as exc:
        return [f"conversion: {exc.message} {exc.details}".strip()]
    result = engine.validate(prompt)
    if result.ok and not result.node_errors:
        return []
    lines = []
    if result.error and result.error.get("type") != "prompt_outputs_failed_validation":
        lines.append(f"{result.error.get('type')}: {result.error.get('message')} {result.error.get('details', '')}")
    for node_id, entry in (result.node_errors or {}).items():
        for error in entry.get("errors", []):
            lines.append(f"#{node_id} {entry.get('class_type')}: {error.get('message')} {error.get('details', '')}".strip())
    return lines or ["invalid"]


def run_template(workflow: dict[str, Any], family: str | None, registry: NodeRegistry,
                 base: Path) -> template_runner.RunOutcome:
    """The end-to-end verdict on tiny random-weight models, in a fresh base folder under `base`."""
    run_base = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    return template_runner.run_tiny(workflow, family or "none", registry, run_base)


def should_run(outcome: Outcome, workflow: dict[str, Any]) -> bool:
    """Run it when its node types are all here and its models (if any) are of a family Plexus loads."""
    if outcome.missing_types:
        return False
    if outcome.family is not None:
        return True
    return not named_models(workflow) and not outcome.unsupported_models


def survey(base: Path, *, run: bool = False) -> list[Outcome]:
    folder = templates_dir()
    if folder is None:
        raise SystemExit("comfyui-workflow-templates-json is not installed (pip install -r requirements.txt)")
    folders = Folders(base)
    folders.ensure_dirs()
    services.install(services.NodeServices(folders))
    try:
        registry = NodeRegistry()
        register_builtins(registry)
        engine = Engine(registry, EventBus())
        outcomes = []
        for entry in index_entries(folder):
            workflow = read_workflow(folder, str(entry["name"]))
            support = assess(entry, workflow, registry)
            outcome = Outcome(support.name, str(entry.get("title") or support.name), support.missing_types,
                              support.unsupported_models, family=model_family(entry))
            if workflow is not None and not support.missing_types:
                outcome.check_errors = check_template(workflow, registry, engine, folders)
                outcome.checked = not outcome.check_errors
                if run and should_run(outcome, workflow):
                    verdict = run_template(workflow, outcome.family, registry, base)
                    outcome.ran, outcome.run_error, outcome.run_seconds = verdict.ok, verdict.error, verdict.seconds
            elif workflow is None:
                outcome.check_errors = ["workflow file missing from the package"]
            outcomes.append(outcome)
        engine.close()
        return outcomes
    finally:
        services.install(None)


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    have_types = [o for o in outcomes if not o.missing_types and not o.check_errors[:1] == ["workflow file missing from the package"]]
    missing = collections.Counter(t for o in outcomes for t in o.missing_types)
    return {
        "templates": len(outcomes),
        "all_node_types_present": len(have_types),
        "pass_check": sum(o.checked for o in outcomes),
        "pass_check_and_supported_family": sum(o.checked and not o.unsupported_models for o in outcomes),
        "ran_end_to_end": [o.name for o in outcomes if o.ran],
        "run_failed": [(o.name, o.run_error) for o in outcomes if o.ran is False],
        "run_attempted": sum(o.ran is not None for o in outcomes),
        "fail_check": [(o.name, o.check_errors[:3]) for o in have_types if not o.checked],
        "missing_types_by_templates": missing.most_common(),
    }


# Counts of earlier states (rows of the before / after table): label, every node type, pass check, ran.
HISTORY = (
    ("before (main at a91659e: placeholder models only, model-free templates run)", 50, 25, 1),
    ("before the editor-drawn / editor-added widgets in the converter (main at c46f868)", 50, 41, 19),
)


def markdown(outcomes: list[Outcome], facts: dict[str, Any], version: str) -> str:
    lines = [
        "# Official workflow templates in Plexus",
        "",
        f"Generated by `scripts/templates_report.py --write-docs` from `comfyui-workflow-templates-json` {version}.",
        "Rerun it after adding nodes; the counts below are the state of the commit that wrote this file.",
        "",
        f"- templates in the index: {facts['templates']}",
        f"- templates whose node types Plexus registers: {facts['all_node_types_present']}",
        f"- of those, passing `main.py check` with placeholder model files: {facts['pass_check']}",
        f"- passing check with a model family Plexus loads: {facts['pass_check_and_supported_family']}",
        f"- run end to end on tiny random-weight models (`--run`): {len(facts['ran_end_to_end'])} of "
        f"{facts['run_attempted']} attempted (those whose node types Plexus has, with no model or a family it loads)",
        "",
        "Before / after the tiny-model template runner (same package version, `scripts/templates_report.py --run`):",
        "",
        "| state | have every node type | pass `check` | run end to end |",
        "|---|---|---|---|",
        *[f"| {label} | {a} | {b} | {c} |" for label, a, b, c in HISTORY],
        f"| this commit | {facts['all_node_types_present']} | {facts['pass_check']} | {len(facts['ran_end_to_end'])} |",
        "",
        "## End to end on tiny random-weight models",
        "",
        "Each run writes the model files the template's loaders name as tiny random-weight files in the real key",
        "layouts, generated input images for its LoadImage nodes, shrinks sizes to 64 px and steps to 3, and runs",
        "it through the engine (scripts/template_runner.py); pass = it finished with an output image (a text-only",
        "template: every output node left its text).",
        "",
        "| template | family | result | seconds | first error |",
        "|---|---|---|---|---|",
        *[f"| {o.name} | {o.family or '-'} | {'pass' if o.ran else 'FAIL'} | {o.run_seconds:.1f} | "
          f"{(o.run_error or '-').replace('|', '/')} |" for o in sorted(outcomes, key=lambda o: o.name) if o.ran is not None],
        "",
        "## Missing node types, by the number of templates that need them",
        "",
        "| node type | templates |",
        "|---|---|",
        *[f"| {t} | {n} |" for t, n in facts["missing_types_by_templates"]],
        "",
        "## Templates and what they lack",
        "",
        "| template | model family not supported | missing node types / check errors |",
        "|---|---|---|",
    ]
    for o in sorted(outcomes, key=lambda o: o.name):
        if o.checked and not o.unsupported_models:
            continue
        lacking = ", ".join(o.missing_types) if o.missing_types else "; ".join(o.check_errors[:2]) or "-"
        lines.append(f"| {o.name} | {', '.join(o.unsupported_models) or '-'} | {lacking.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("comfyui-workflow-templates-json")
    except PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {DOCS.relative_to(ROOT)}")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--run", action="store_true", help="also run every template of a family Plexus loads (or with no model) on tiny random-weight models")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="plexus-templates-") as base:
        outcomes = survey(Path(base), run=args.run)
    facts = summary(outcomes)
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print(f"templates: {facts['templates']}; all node types present: {facts['all_node_types_present']}; "
              f"pass check: {facts['pass_check']} (with a supported model family: "
              f"{facts['pass_check_and_supported_family']})")
        if args.run:
            print(f"ran end to end: {len(facts['ran_end_to_end'])} of {facts['run_attempted']}")
            for name, error in facts["run_failed"]:
                print(f"  FAILS TO RUN {name}: {error}")
        for name, errors in facts["fail_check"]:
            print(f"  FAILS CHECK {name}: {errors}")
        print("most needed missing node types:", ", ".join(f"{t} ({n})" for t, n in facts["missing_types_by_templates"][:25]))
    if args.write_docs:
        DOCS.write_text(markdown(outcomes, facts, package_version()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
