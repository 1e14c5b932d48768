"""Plexus's FLUX ControlNets against ComfyUI's, module to module, on the same random files.

    .venv/bin/python bench/flux_controlnet_peer.py --peer-dir ../peer/ComfyUI [--peer-python ../peer/venv/bin/python]
        [--width 64 | --width 3072]

Writes random FLUX ControlNet files with models.testing.write_random_flux_controlnet: InstantX (diffusers'
FluxControlNetModel names, latent hint), a Union-Pro net (10 modes, type 1 chosen), alimama's inpainting
layout (17 hint channels), XLabs (BFL names, RGB hint through input_hint_block) and MistoLine. ComfyUI, in a
subprocess of its own interpreter (CPU, fp32), converts each file as its load_controlnet_flux_instantx /
load_controlnet_flux_xlabs_mistoline do (convert_diffusers_mmdit with the original keys kept; convert_mistoline)
and builds comfy.ldm.flux.controlnet.ControlNetFlux with the file's sizes (ComfyUI's own detection assumes the
released 3072 width, so the sizes are passed here; `--width 3072` uses them with 1 + 1 blocks). Both forwards
take the same inputs on a non-square latent (6 x 10: 3 x 5 tokens); their per-base-block outputs (ComfyUI's
"input" 19 and "output" 38 lists, Plexus's after_block / after_single) are compared. One JSON line per file.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEER_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, cfg["peer_dir"])
    from comfy.cli_args import args
    args.cpu = True
    args.force_fp32 = True
    import torch
    from safetensors.torch import load_file
    import comfy.controlnet, comfy.model_detection, comfy.ops
    from comfy.ldm.flux.controlnet import ControlNetFlux
    results = {}
    for case in cfg["cases"]:
        sd = load_file(case["file"])
        kwargs = dict(case["flux"], operations=comfy.ops.disable_weight_init)
        if case["layout"] == "diffusers":            # load_controlnet_flux_instantx
            new_sd = comfy.model_detection.convert_diffusers_mmdit(sd, "")
            for k in sd:
                new_sd[k] = sd[k]
            modes = new_sd["controlnet_mode_embedder.weight"].shape[0] if "controlnet_mode_embedder.weight" in new_sd else 0
            model = ControlNetFlux(latent_input=True, num_union_modes=modes,
                                   control_latent_channels=new_sd["pos_embed_input.weight"].shape[1] // 4, **kwargs)
        else:                                         # load_controlnet_flux_xlabs_mistoline
            mistoline = case["layout"] == "mistoline"
            new_sd = comfy.controlnet.convert_mistoline(sd) if mistoline else sd
            model = ControlNetFlux(mistoline=mistoline, **kwargs)
        missing, unexpected = model.load_state_dict(new_sd, strict=False)
        inputs = {k: torch.from_numpy(v) for k, v in np.load(case["inputs"]).items()}
        with torch.no_grad():
            out = model.eval()(x=inputs["x"], timesteps=inputs["t"], context=inputs["context"], y=inputs["y"],
                               guidance=inputs["guidance"], hint=inputs["hint"], control_type=case["control_type"])
        np.savez(case["out"], **{f"input_{i}": t.numpy() for i, t in enumerate(out["input"])},
                 **{f"output_{i}": t.numpy() for i, t in enumerate(out.get("output", ()))})
        results[case["name"]] = {"missing": list(missing), "unexpected": [k for k in unexpected
                                 if not k.startswith(("transformer_blocks.", "single_transformer_blocks.",
                                                      "controlnet_x_embedder", "x_embedder", "time_text_embed",
                                                      "context_embedder"))]}
    print(json.dumps(results))
""")

CASES = {  # name: (layout, tiny_flux_controlnet_config arguments, union type)
    "instantx": ("diffusers", {"double": 2, "single": 1}, []),
    "union_pro": ("diffusers", {"double": 2, "single": 1, "union_modes": 10}, [1]),
    "inpaint": ("diffusers", {"double": 1, "single": 1, "hint_channels": 17}, []),
    "xlabs": ("xlabs", {"double": 2, "single": 0}, []),
    "mistoline": ("mistoline", {"double": 1, "single": 1}, []),
}


def main(argv: list[str] | None = None) -> int:
    import dataclasses

    import torch

    from models.controlnet_flux import FluxControlNet
    from models.convert.controlnet_flux import instantx_state, mistoline_state
    from models.detection import detect_control_model
    from models.files import load_state_dict
    from models.testing import tiny_flux_controlnet_config, write_random_flux_controlnet
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-dir", type=Path, required=True)
    parser.add_argument("--peer-python", type=Path)
    parser.add_argument("--width", type=int, default=64, choices=(64, 3072))
    parser.add_argument("--work", type=Path, default=Path("/tmp/plexus-flux-controlnet-peer"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cases, ours = [], {}
    for name, (layout, extra, control_type) in CASES.items():
        config = tiny_flux_controlnet_config(layout=layout, **extra)
        if args.width == 3072:                                     # the released widths, 1 + 1 blocks
            flux = dataclasses.replace(config.flux, hidden_size=3072, num_heads=24, context_in_dim=4096, vec_in_dim=768,
                                       axes_dim=(16, 56, 56), depth=1, depth_single_blocks=0 if layout == "xlabs" else 1)
            config = dataclasses.replace(config, flux=flux)
        file, inputs_path = args.work / f"{name}.safetensors", args.work / f"{name}-inputs.npz"
        write_random_flux_controlnet(file, config, layout=layout, seed=3)
        c = config.flux
        g = torch.Generator().manual_seed(0)
        hint = (torch.randn(2, config.hint_channels, 6, 10, generator=g) if config.latent_hint
                else torch.rand(2, 3, 48, 80, generator=g))
        inputs = {"x": torch.randn(2, 16, 6, 10, generator=g), "hint": hint, "t": torch.tensor([0.9, 0.25]),
                  "context": torch.randn(2, 7, c.context_in_dim, generator=g),
                  "y": torch.randn(2, c.vec_in_dim, generator=g), "guidance": torch.tensor([3.5, 3.5])}
        np.savez(inputs_path, **{k: v.numpy() for k, v in inputs.items()})
        flux_kwargs = dict(in_channels=16, out_channels=16, vec_in_dim=c.vec_in_dim, context_in_dim=c.context_in_dim,
                           hidden_size=c.hidden_size, mlp_ratio=c.mlp_ratio, num_heads=c.num_heads, depth=c.depth,
                           depth_single_blocks=c.depth_single_blocks, axes_dim=list(c.axes_dim), theta=10000,
                           patch_size=2, qkv_bias=True, guidance_embed=c.guidance_embed)
        cases.append({"name": name, "layout": layout, "file": str(file), "inputs": str(inputs_path),
                      "out": str(args.work / f"{name}-peer.npz"), "flux": flux_kwargs, "control_type": control_type})
        with load_state_dict(file) as source:
            info = detect_control_model(source.shapes())
            raw = {k: source[k] for k in source.shapes()}
        module = FluxControlNet(info.config, "sdpa").eval()
        module.load_state_dict(instantx_state(raw) if layout == "diffusers" else mistoline_state(raw), strict=True)
        with torch.no_grad():
            ours[name] = module(inputs["x"], inputs["hint"], inputs["t"], inputs["context"], inputs["y"],
                                inputs["guidance"], tuple(control_type))
        del module, raw
    python = args.peer_python or args.peer_dir.parent / "venv" / "bin" / "python"
    cfg = {"peer_dir": str(args.peer_dir.resolve()), "cases": cases}
    run = subprocess.run([str(python), "-c", PEER_SCRIPT, json.dumps(cfg)], check=True, capture_output=True, text=True)
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    worst = 0.0
    for case in cases:
        theirs = np.load(case["out"])
        got = ours[case["name"]]
        diffs, count, peak = [], 0, 0.0
        for kind, table in (("input", got.after_block), ("output", got.after_single)):
            keys = sorted(int(k.split("_")[1]) for k in theirs.files if k.startswith(kind + "_"))
            if sorted(table) != keys:
                diffs.append(np.inf)
                continue
            for j in keys:
                a, b = table[j].numpy(), theirs[f"{kind}_{j}"]
                diffs.append(float(np.abs(a - b).max()) if a.shape == b.shape else np.inf)
                peak = max(peak, float(np.abs(b).max()))
                count += 1
        worst = max(worst, max(diffs))
        print(json.dumps({"case": case["name"], "width": args.width, "base_blocks_compared": count,
                          "max_abs_diff": max(diffs), "peer_max_abs": peak, **loaded[case["name"]]}), flush=True)
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
