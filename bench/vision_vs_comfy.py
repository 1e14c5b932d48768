"""Plexus's CLIP vision encode and unCLIP vector against ComfyUI's own code, on the same inputs (fp32, CPU).

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/vision_vs_comfy.py \
        --peer-dir ../peer/ComfyUI --peer-python ../peer/venv/bin/python [--work /tmp/vision-bench]

1. CLIP vision: a full-size random ViT-L/14 file (what ComfyUI's clip_vision_config_vitl.json describes; it
   picks its config by depth, so a tiny tower would not load there), saved in the Hugging Face layout and
   in the OpenCLIP `visual.*` layout; two test images (a 300 x 420 and a 224 x 224 one), crop "center"
   and "none". ComfyUI's side is `comfy.clip_vision.load(path).encode_image(image, crop)`; Plexus's
   `diffusion.clip_vision.load_clip_vision_file` + `encode_image`. Reported: max |diff| of image_embeds,
   last_hidden_state and penultimate_hidden_states.
2. unCLIP: `comfy.model_base.unclip_adm` with ComfyUI's CLIPEmbeddingNoiseAugmentation (one image, and
   three images over two applications, which takes the merge path) against models.unclip.unclip_adm.

Needs ~4 GB of RAM (the tower in fp32 on both sides), hence the heavy lock.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEER_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    peer_dir, work = sys.argv[1], sys.argv[2]
    sys.path.insert(0, peer_dir)
    import comfy.options
    comfy.options.enable_args_parsing()
    sys.argv = ["peer", "--cpu", "--force-fp32"]
    import comfy.clip_vision
    from comfy.ldm.modules.encoders.noise_aug_modules import CLIPEmbeddingNoiseAugmentation
    from comfy.model_base import unclip_adm
    torch.set_grad_enabled(False)
    inputs = torch.load(work + "/inputs.pt")
    out = {}
    for layout in ("hf", "open_clip"):
        vision = comfy.clip_vision.load(f"{work}/vit_l_{layout}.safetensors")
        for name, image in inputs["images"].items():
            for crop in (True, False):
                o = vision.encode_image(image, crop=crop)
                out[(layout, name, crop)] = {k: o[k].float() for k in
                                             ("image_embeds", "last_hidden_state", "penultimate_hidden_states")}
    class O:
        pass
    aug = CLIPEmbeddingNoiseAugmentation(noise_schedule_config={"timesteps": 1000,
                                         "beta_schedule": "squaredcos_cap_v2"}, timestep_dim=768)
    first, second = O(), O()
    first.image_embeds, second.image_embeds = inputs["embeds"][:1], inputs["embeds"][1:]
    out["unclip_single"] = unclip_adm([{"clip_vision_output": first, "strength": 0.7, "noise_augmentation": 0.3}],
                                      "cpu", aug, 0.05, 25 - 10)
    out["unclip_merge"] = unclip_adm([{"clip_vision_output": first, "strength": 0.7, "noise_augmentation": 0.3},
                                      {"clip_vision_output": second, "strength": 1.2, "noise_augmentation": 0.1}],
                                     "cpu", aug, 0.05, 25 - 10)
    torch.save(out, work + "/peer.pt")
""")


def write_inputs(work: Path) -> dict:
    from models.clip_vision import ClipVisionConfig
    from models.testing_vision import write_random_clip_vision
    config = ClipVisionConfig()                                          # ViT-L/14 at 224, projection 768
    for layout in ("hf", "open_clip"):
        path = work / f"vit_l_{layout}.safetensors"
        if not path.exists():
            write_random_clip_vision(path, config, layout=layout, seed=7, dtype=torch.float16)
    g = torch.Generator().manual_seed(0)
    images = {"300x420": torch.rand(1, 300, 420, 3, generator=g), "224x224": torch.rand(1, 224, 224, 3, generator=g)}
    inputs = {"images": images, "embeds": torch.randn(3, 768, generator=g)}
    torch.save(inputs, work / "inputs.pt")
    return inputs


def plexus_side(work: Path, inputs: dict) -> dict:
    from diffusion.clip_vision import encode_image, load_clip_vision_file
    from model_management import MemorySettings, ModelManager
    from models.unclip import ImageEmbedding, NoiseAugmentor, unclip_adm
    manager = ModelManager(MemorySettings(force_fp32=True))
    out = {}
    for layout in ("hf", "open_clip"):
        vision = load_clip_vision_file(work / f"vit_l_{layout}.safetensors", manager)
        for name, image in inputs["images"].items():
            for crop in (True, False):
                o = encode_image(vision, image, "center" if crop else "none")
                out[(layout, name, crop)] = {k: o[k] for k in
                                             ("image_embeds", "last_hidden_state", "penultimate_hidden_states")}
    augmentor, e = NoiseAugmentor(768), inputs["embeds"]
    out["unclip_single"] = unclip_adm([ImageEmbedding(e[:1], 0.7, 0.3)], augmentor, seed=25, merge_augmentation=0.05)
    out["unclip_merge"] = unclip_adm([ImageEmbedding(e[:1], 0.7, 0.3), ImageEmbedding(e[1:], 1.2, 0.1)], augmentor,
                                     seed=25, merge_augmentation=0.05)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-dir", required=True)
    parser.add_argument("--peer-python", default=sys.executable)
    parser.add_argument("--work", default="/tmp/plexus-vision-bench")
    a = parser.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    inputs = write_inputs(work)
    subprocess.run([a.peer_python, "-c", PEER_SCRIPT, str(Path(a.peer_dir).resolve()), str(work)], check=True)
    peer = torch.load(work / "peer.pt")
    ours = plexus_side(work, inputs)
    for key, value in ours.items():
        if isinstance(value, dict):
            diffs = {k: float((v - peer[key][k]).abs().max()) for k, v in value.items()}
            scale = float(peer[key]["last_hidden_state"].abs().max())
            print(f"clip_vision {key[0]:9s} {key[1]:8s} crop={'center' if key[2] else 'none  '}  max|diff| "
                  + "  ".join(f"{k} {d:.2e}" for k, d in diffs.items()) + f"   (|last_hidden_state| max {scale:.1f})")
        else:
            print(f"{key:14s} max|diff| {float((value - peer[key]).abs().max()):.2e}")


if __name__ == "__main__":
    main()
