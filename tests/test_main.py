"""main.py: argument parsing, `check` and `run` on workflows of utility and example-plugin nodes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import main

REPO = Path(__file__).resolve().parent.parent

API_WORKFLOW = {
    "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
    "2": {"class_type": "ExampleRepeatText", "inputs": {"text": ["1", 0], "times": 3, "separator": "-"}},
    "3": {"class_type": "ExampleCountSteps", "inputs": {"steps": 5}},
    "4": {"class_type": "ExampleSaveText", "inputs": {"text": ["2", 0], "filename_prefix": "runs/text"}},
    "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
}

# The editor's saved format (version 0.4 links) for PrimitiveString -> ExampleRepeatText -> ExampleSaveText.
EDITOR_WORKFLOW = {
    "last_node_id": 3, "last_link_id": 2, "version": 0.4, "groups": [], "config": {}, "extra": {},
    "nodes": [
        {"id": 1, "type": "PrimitiveString", "mode": 0, "inputs": [],
         "outputs": [{"name": "STRING", "type": "STRING", "links": [1], "slot_index": 0}],
         "widgets_values": ["from-editor"]},
        {"id": 2, "type": "ExampleRepeatText", "mode": 0,
         "inputs": [{"name": "text", "type": "STRING", "link": 1, "widget": {"name": "text"}}],
         "outputs": [{"name": "text", "type": "STRING", "links": [2], "slot_index": 0}],
         "widgets_values": ["ignored", 2, "+"]},
        {"id": 3, "type": "ExampleSaveText", "mode": 0,
         "inputs": [{"name": "text", "type": "STRING", "link": 2}],
         "outputs": [], "widgets_values": ["editor"]},
    ],
    "links": [[1, 1, 0, 2, 0, "STRING"], [2, 2, 0, 3, 0, "STRING"]],
}


@pytest.fixture
def dirs(tmp_path: Path) -> list[str]:
    """Directory options that keep every write inside tmp_path (custom_nodes stay the repo's)."""
    return ["--output-directory", str(tmp_path / "output"), "--input-directory", str(tmp_path / "input"),
            "--temp-directory", str(tmp_path / "temp"), "--user-directory", str(tmp_path),
            "--models-directory", str(tmp_path / "models")]


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_parse_defaults_and_comfyui_names() -> None:
    args = main.parse_args([])
    assert args.command == "serve" and args.listen == "127.0.0.1" and args.port == 8188
    assert args.max_upload_size == 100.0 and args.whitelist_custom_nodes == [] and not args.cpu
    args = main.parse_args(["--listen", "--port", "9000", "--enable-cors-header", "--cache-ram",
                            "--lowvram", "--reserve-vram", "1.5", "--extra-model-paths-config", "a.yaml", "b.yaml",
                            "--extra-model-paths-config", "c.yaml", "--disable-all-custom-nodes",
                            "--whitelist-custom-nodes", "p1", "p2"])
    assert args.listen == "0.0.0.0,::" and args.port == 9000 and args.enable_cors_header == "*"
    assert args.cache_ram == 4.0 and args.lowvram and args.reserve_vram == 1.5
    assert args.extra_model_paths_config == [["a.yaml", "b.yaml"], ["c.yaml"]]
    assert args.disable_all_custom_nodes and args.whitelist_custom_nodes == ["p1", "p2"]


def test_options_work_before_and_after_the_subcommand() -> None:
    args = main.parse_args(["--cpu", "run", "wf.json", "--port", "1", "--set", "1.a=2", "--set", "3.b=x"])
    assert args.command == "run" and args.cpu and args.port == 1 and args.workflow == Path("wf.json")
    assert args.overrides == ["1.a=2", "3.b=x"]
    args = main.parse_args(["check", "wf.json", "--cache-lru", "5"])
    assert args.cache_lru == 5 and args.listen == "127.0.0.1"


def test_conflicting_flags_are_refused() -> None:
    for argv in (["--cpu", "--lowvram"], ["--force-fp32", "--force-fp16"], ["--cache-none", "--cache-lru", "3"],
                 ["--tls-keyfile", "k.pem"]):
        with pytest.raises(SystemExit):
            main.parse_args(argv)


def test_memory_settings_and_cache_policy() -> None:
    settings = main.memory_settings(main.parse_args(["--novram", "--vram-budget", "2", "--fp32-vae"]))
    assert settings.vram_mode.value == "novram" and settings.vram_budget_bytes == 2 * 1024 ** 3 and settings.fp32_vae
    assert main.cache_policy(main.parse_args(["--cache-lru", "7"])).max_entries == 7
    assert main.cache_policy(main.parse_args(["--cache-none"])).kind == "none"
    assert main.cache_policy(main.parse_args(["--cache-ram", "2"])).min_free_bytes == 2 * 1024 ** 3
    assert main.cache_policy(main.parse_args([])).kind == "keep_last"


def test_compile_unet_flag_reaches_the_memory_settings() -> None:
    assert main.memory_settings(main.parse_args(["--compile-unet"])).compile_diffusion_model
    assert not main.memory_settings(main.parse_args([])).compile_diffusion_model
    assert main.memory_settings(main.parse_args(["run", "wf.json", "--compile-unet"])).compile_diffusion_model


def test_compile_mode_and_cache_folder_reach_the_memory_settings(tmp_path: Path) -> None:
    default = main.memory_settings(main.parse_args(["--compile-unet", "--base-directory", str(tmp_path)]))
    assert default.compile_in_background and default.compile_cache_dir == str(tmp_path / "cache" / "compile")
    chosen = main.memory_settings(main.parse_args(["--compile-unet", "--compile-blocking",
                                                   "--compile-cache-dir", str(tmp_path / "ind")]))
    assert not chosen.compile_in_background and chosen.compile_cache_dir == str(tmp_path / "ind")


def test_contradicting_device_flags_exit_2(tmp_path: Path, dirs: list[str], capsys) -> None:
    workflow = write_json(tmp_path / "wf.json", API_WORKFLOW)
    assert main.main(["check", str(workflow), "--force-fp32", "--bf16-unet", *dirs]) == 2
    assert "--bf16-unet" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_check_valid(tmp_path: Path, dirs: list[str], capsys) -> None:
    workflow = write_json(tmp_path / "wf.json", API_WORKFLOW)
    assert main.main(["check", str(workflow), *dirs]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and sorted(out["outputs_to_execute"]) == ["4", "5"]
    assert not (tmp_path / "output").exists()  # check writes nothing


def test_check_invalid_prints_comfyui_error(tmp_path: Path, dirs: list[str], capsys) -> None:
    broken = json.loads(json.dumps(API_WORKFLOW))
    broken["2"]["inputs"]["times"] = "many"
    broken["6"] = {"class_type": "NoSuchNode", "inputs": {}}
    workflow = write_json(tmp_path / "wf.json", broken)
    assert main.main(["check", str(workflow), *dirs]) == 1
    captured = capsys.readouterr()
    body = json.loads(captured.out)
    assert set(body) == {"error", "node_errors"} and body["error"]["type"]
    assert body["error"]["type"] == "invalid_prompt"
    assert body["error"]["message"] == "Cannot execute because node NoSuchNode does not exist."
    assert "invalid workflow" in captured.err


def test_check_with_a_set_that_fixes_the_graph(tmp_path: Path, dirs: list[str]) -> None:
    broken = json.loads(json.dumps(API_WORKFLOW))
    broken["2"]["inputs"]["times"] = 0   # below min=1
    workflow = write_json(tmp_path / "wf.json", broken)
    assert main.main(["check", str(workflow), *dirs]) == 1
    assert main.main(["check", str(workflow), "--set", "2.times=4", *dirs]) == 0


@pytest.mark.parametrize("override, fragment", [
    ("9.value=1", "no node '9'"),
    ("1.nope=1", "has no input 'nope'"),
    ("no-dot=1", "expected NODE_ID.input=value"),
    ("1.value", "expected NODE_ID.input=value"),
])
def test_bad_overrides_exit_2(tmp_path: Path, dirs: list[str], capsys, override: str, fragment: str) -> None:
    workflow = write_json(tmp_path / "wf.json", API_WORKFLOW)
    assert main.main(["check", str(workflow), "--set", override, *dirs]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["error"]["type"] == "invalid_override" and fragment in body["error"]["message"]


def test_override_values_parse_as_json_else_text() -> None:
    prompt = json.loads(json.dumps(API_WORKFLOW))
    registry = main.build_app(main.parse_args(["check", "x.json"])).registry
    main.apply_overrides(prompt, ["2.times=7", "2.separator=a b", "1.value=\"quoted\""], registry)
    assert prompt["2"]["inputs"]["times"] == 7 and prompt["2"]["inputs"]["separator"] == "a b"
    assert prompt["1"]["inputs"]["value"] == "quoted"
    main.apply_overrides(prompt, ["1.value=[1, 2]"], registry)
    assert prompt["1"]["inputs"]["value"] == [1, 2]


def test_unreadable_and_non_workflow_files_exit_2(tmp_path: Path, dirs: list[str], capsys) -> None:
    assert main.main(["check", str(tmp_path / "missing.json"), *dirs]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert main.main(["check", str(tmp_path / "bad.json"), *dirs]) == 2
    write_json(tmp_path / "list.json", [1, 2])
    assert main.main(["check", str(tmp_path / "list.json"), *dirs]) == 2
    assert "invalid_workflow_file" in capsys.readouterr().out


def test_run_writes_outputs_and_prints_paths(tmp_path: Path, dirs: list[str], capsys) -> None:
    workflow = write_json(tmp_path / "wf.json", API_WORKFLOW)
    code = main.main(["run", str(workflow), "--set", "2.times=2", "--set", "1.value=hey", *dirs])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = tmp_path / "output" / "runs" / "text_00001_.txt"
    assert written.read_text() == "hey-hey"
    assert captured.out.split() == [str(written)]
    assert "Import times for custom nodes:" in captured.err and "example_plexus_plugin" in captured.err
    assert "Prompt executed in" in captured.err
    assert "#3 ExampleCountSteps" in captured.err and "5/5" in captured.err   # the progress bar
    # a second run numbers the next file
    assert main.main(["run", str(workflow), *dirs, "--no-progress"]) == 0
    assert (tmp_path / "output" / "runs" / "text_00002_.txt").read_text() == "hello-hello-hello"


def test_run_json_result(tmp_path: Path, dirs: list[str], capsys) -> None:
    workflow = write_json(tmp_path / "wf.json", {"prompt": API_WORKFLOW, "extra_data": {}})
    assert main.main(["run", str(workflow), "--json", "--no-progress", *dirs]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "success" and result["outputs"]["5"]["text"] == ["5"]
    assert [Path(f).name for f in result["files"]] == ["text_00001_.txt"]


def test_run_invalid_graph_exits_1(tmp_path: Path, dirs: list[str], capsys) -> None:
    broken = {"1": {"class_type": "ExampleSaveText", "inputs": {"filename_prefix": "x"}}}  # text missing
    workflow = write_json(tmp_path / "wf.json", broken)
    assert main.main(["run", str(workflow), *dirs]) == 1
    assert "node_errors" in json.loads(capsys.readouterr().out)
    assert not (tmp_path / "output").exists()


def test_run_node_failure_exits_3(tmp_path: Path, dirs: list[str], capsys) -> None:
    escaping = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "t"}},
                "2": {"class_type": "ExampleSaveText", "inputs": {"text": ["1", 0], "filename_prefix": "../../x"}}}
    workflow = write_json(tmp_path / "wf.json", escaping)
    assert main.main(["run", str(workflow), "--no-progress", *dirs]) == 3
    captured = capsys.readouterr()
    assert "leaves the output folder" in json.loads(captured.out)["error"]["exception_message"]
    assert "error in node 2" in captured.err


def test_run_editor_format(tmp_path: Path, dirs: list[str], capsys) -> None:
    workflow = write_json(tmp_path / "editor.json", EDITOR_WORKFLOW)
    assert main.main(["run", str(workflow), "--no-progress", *dirs]) == 0
    assert (tmp_path / "output" / "editor_00001_.txt").read_text() == "from-editor+from-editor"
    capsys.readouterr()
    assert main.main(["check", str(workflow), "--set", "2.times=5", *dirs]) == 0


def test_disable_all_custom_nodes_makes_plugin_nodes_missing(tmp_path: Path, dirs: list[str], capsys) -> None:
    workflow = write_json(tmp_path / "wf.json", API_WORKFLOW)
    assert main.main(["check", str(workflow), "--disable-all-custom-nodes", *dirs]) == 1
    capsys.readouterr()
    assert main.main(["check", str(workflow), "--disable-all-custom-nodes",
                      "--whitelist-custom-nodes", "example_plexus_plugin", *dirs]) == 0


def test_run_and_check_do_not_import_the_server(tmp_path: Path) -> None:
    workflow = write_json(tmp_path / "wf.json", API_WORKFLOW)
    code = ("import sys, main\n"
            f"code = main.main(['check', {str(workflow)!r}, '--output-directory', {str(tmp_path / 'o')!r}])\n"
            "print('AIOHTTP', 'aiohttp' in sys.modules, 'web' in sys.modules, code)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "AIOHTTP False False 0" in out.stdout, out.stderr


def test_ctrl_c_interrupts_the_prompt(tmp_path: Path, dirs: list[str], capsys, monkeypatch) -> None:
    """SIGINT during a node: the engine is interrupted, the run ends with 130, the handler is restored."""
    import os
    import signal

    from execution.protocol import NodeContext

    real_report = NodeContext.report_progress

    def report_then_press_ctrl_c(self, value, maximum, preview=None):
        if value == 2:
            os.kill(os.getpid(), signal.SIGINT)   # ExampleCountSteps checks interruption at step 3
        return real_report(self, value, maximum, preview)

    monkeypatch.setattr(NodeContext, "report_progress", report_then_press_ctrl_c)
    workflow = write_json(tmp_path / "wf.json", {"1": {"class_type": "ExampleCountSteps", "inputs": {"steps": 50}},
                                                 "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    before = signal.getsignal(signal.SIGINT)
    assert main.main(["run", str(workflow), "--no-progress", *dirs]) == 130
    assert signal.getsignal(signal.SIGINT) is before
    assert "interrupting" in capsys.readouterr().err


def test_attention_flags_reach_the_memory_settings() -> None:
    def backend(*argv: str) -> str:
        return main.memory_settings(main.parse_args(list(argv))).attention_backend
    assert backend() == "auto"
    assert backend("--attention", "sub-quadratic") == "sub_quadratic"
    assert backend("--use-split-cross-attention") == "sliced"          # ComfyUI's flags
    assert backend("--use-quad-cross-attention") == "sub_quadratic"
    assert backend("--use-pytorch-cross-attention") == "sdpa"
    assert backend("run", "wf.json", "--attention", "sdpa") == "sdpa"


def test_unknown_attention_backend_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main.parse_args(["--attention", "flash9"])
    assert exit_info.value.code == 2 and "sub-quadratic" in capsys.readouterr().err


def test_weight_prepack_is_on_unless_disabled() -> None:
    assert main.memory_settings(main.parse_args([])).prepack_weights
    assert not main.memory_settings(main.parse_args(["--disable-weight-prepack"])).prepack_weights
    assert not main.memory_settings(main.parse_args(["run", "wf.json", "--disable-weight-prepack"])).prepack_weights
