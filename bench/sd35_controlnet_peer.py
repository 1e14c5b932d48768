"""Plexus's SD3.5 ControlNet (Stability's layout) against ComfyUI's, module to module, on the same random file.

    .venv/bin/python bench/sd35_controlnet_peer.py --peer-dir ../peer/ComfyUI [--peer-python ../peer/venv/bin/python]

Writes a random SD3.5 ControlNet in Stability's layout (models.testing.write_random_sd35_controlnet: 2 blocks,
256 wide = a 4-block base, pooled 2048, control_type canny), random inputs on a non-square latent (10 x 14:
5 x 7 tokens, so the aspect-scaled position grid is exercised) and a random base patch embedding; ComfyUI
loads the file with comfy.controlnet.load_controlnet_state_dict in a subprocess of its own interpreter (CPU,
fp32), gets the same x_embedder weights (as its ControlNetSD35.pre_run copies the base model's), and both
forwards' per-base-block outputs are compared. One JSON line: max / mean absolute difference.
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
    import comfy.controlnet
    net = comfy.controlnet.load_controlnet_state_dict(load_file(cfg["file"]))
    inputs = {k: torch.from_numpy(v) for k, v in np.load(cfg["inputs"]).items()}
    model = net.control_model
    with torch.no_grad():
        model.x_embedder.proj.weight.copy_(inputs["x_weight"])
        model.x_embedder.proj.bias.copy_(inputs["x_bias"])
        out = model(x=inputs["x"], timesteps=inputs["t"], y=inputs["y"], hint=inputs["hint"])["output"]
    np.save(cfg["out"], torch.stack(list(out)).float().numpy())
""")


def main(argv: list[str] | None = None) -> int:
    import torch

    from models.controlnet_mmdit import SD35ControlNet
    from models.convert.controlnet_mmdit import sd35_controlnet_state
    from models.detection import detect_control_model
    from models.files import load_state_dict
    from models.testing import sd35_controlnet_config, write_random_sd35_controlnet
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-dir", type=Path, required=True)
    parser.add_argument("--peer-python", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/plexus-sd35-controlnet-peer"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    file, inputs_path, out = args.work / "sd35-cn.safetensors", args.work / "inputs.npz", args.work / "peer.npy"
    write_random_sd35_controlnet(file, sd35_controlnet_config(hidden=256, blocks=2, adm=2048), control_type="canny",
                                 seed=3)
    g = torch.Generator().manual_seed(0)
    inputs = {"x": torch.randn(2, 16, 10, 14, generator=g), "hint": torch.randn(2, 16, 10, 14, generator=g),
              "y": torch.randn(2, 2048, generator=g), "t": torch.tensor([900.0, 100.0]),
              "x_weight": torch.randn(256, 16, 2, 2, generator=g) * 0.1, "x_bias": torch.randn(256, generator=g) * 0.1}
    np.savez(inputs_path, **{k: v.numpy() for k, v in inputs.items()})
    python = args.peer_python or args.peer_dir.parent / "venv" / "bin" / "python"
    cfg = {"peer_dir": str(args.peer_dir.resolve()), "file": str(file), "inputs": str(inputs_path), "out": str(out)}
    subprocess.run([str(python), "-c", PEER_SCRIPT, json.dumps(cfg)], check=True)
    with load_state_dict(file) as source:
        info = detect_control_model(source.shapes())
        state = sd35_controlnet_state({k: source[k] for k in source.shapes()})
    module = SD35ControlNet(info.config, "sdpa").eval()
    module.load_state_dict(state)

    def embed(z):
        return torch.nn.functional.conv2d(z, inputs["x_weight"], inputs["x_bias"], stride=2).flatten(2).transpose(1, 2)
    with torch.no_grad():
        got = module(inputs["x"], inputs["hint"], inputs["t"], inputs["y"], embed)
    ours = torch.stack([got.after_block[i] for i in sorted(got.after_block)]).numpy()
    theirs = np.load(out)
    diff = np.abs(ours - theirs) if ours.shape == theirs.shape else np.array([np.inf])
    print(json.dumps({"outputs": [len(got.after_block), len(theirs)], "shape": list(ours.shape),
                      "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                      "peer_max_abs": float(np.abs(theirs).max())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
