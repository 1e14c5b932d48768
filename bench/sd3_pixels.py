"""Plexus against ComfyUI on the same random-weight SD3 / SD3.5 files, pixel for pixel, in --force-fp32.

    .venv/bin/python bench/sd3_pixels.py --peer-dir ../peer/ComfyUI [--peer-python ../peer/venv/bin/python]

Writes (once, under --work) an SD3-layout single file with a small MM-DiT (2 joint blocks, 128 wide, SD3's
context 4096 and pooled 2048 inputs; `--sd35` adds QK-norm and dual attention in block 0) and the
full-size 16-channel VAE, plus a full-size random CLIP-L file; both sides load them (checkpoint +
CLIPLoader type sd3: CLIP-L alone, so CLIP-G's pooled half is zeros and T5 is absent), encode the same
prompts, sample 64x64 with the same seed and sampler, decode, and the 8-bit pixels are compared. The
ComfyUI side runs in a subprocess of the peer's own interpreter through its Python API
(comfy.sd.load_checkpoint_guess_config, comfy.sd.load_clip, nodes.common_ksampler), CPU, fp32.

`--controlnet` applies a random one-block SD3 ControlNet (diffusers SD3ControlNetModel layout) to both prompts
with ControlNetApplyAdvanced and the VAE-encoded hint, on both sides. `--controlnet stability` applies a random
one-block SD3.5 ControlNet in Stability's own layout (sd3.5_large_controlnet_*: `--control-type` blur / canny /
depth, written by models.testing.write_random_sd35_controlnet) on the small MM-DiT in SD3.5 large's layout
(QK-norm, no dual attention; `--sd35-large`, implied).

`--full FILE` runs a full-size file instead: the SD3 all-in-one file with its own three text encoders (T5-XXL in
fp8 included), or with `--text-encoders FILE...` an SD3.5 medium file (MM-DiT-X + VAE) with standalone clip_l /
clip_g / t5xxl files (bench/sd3_files.py's), loaded as TripleCLIPLoader does on both sides. `--plexus-default` /
`--peer-default` run either side in its default dtypes: the default-mode distance; `--both` runs Plexus in fp32
and then in its default mode against the one ComfyUI fp32 run (one line each).
"""
from __future__ import annotations

import argparse
import gc
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
    args.force_fp32 = cfg["peer_fp32"]
    import torch
    torch.set_grad_enabled(False)
    import comfy.sd, nodes
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(cfg["ckpt"], output_vae=True,
                                                             output_clip=cfg["clip"] is None)[:3]
    if cfg["clip"] is not None:
        clip = comfy.sd.load_clip(cfg["clip"], clip_type=comfy.sd.CLIPType.SD3)
    pos = clip.encode_from_tokens_scheduled(clip.tokenize(cfg["positive"]))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(cfg["negative"]))
    if cfg.get("controlnet"):
        import comfy.controlnet
        net = comfy.controlnet.load_controlnet(cfg["controlnet"])
        hint = torch.from_numpy(np.load(cfg["hint"]))
        pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, net, hint, cfg["cn_strength"], 0.0,
                                                                    1.0, vae=vae)
    latent = {"samples": torch.zeros(1, 16, cfg["size"] // 8, cfg["size"] // 8)}
    out = nodes.common_ksampler(model, cfg["seed"], cfg["steps"], cfg["cfg"], cfg["sampler"], cfg["scheduler"],
                                pos, neg, latent)[0]
    image = vae.decode(out["samples"])
    pixels = np.clip(255.0 * image[0].cpu().numpy(), 0, 255).astype(np.uint8)
    np.save(cfg["out"], pixels)
""")


def write_files(work: Path, is_sd35: bool, is_large: bool = False) -> tuple[Path, Path]:
    import torch

    from models.mmdit import MMDiTConfig
    from models.testing import Sd3CheckpointSpec, text_encoder_config, write_random_sd3_checkpoint, write_random_text_encoder
    from models.vae import VAEConfig
    work.mkdir(parents=True, exist_ok=True)
    name = "sd35-large" if is_large else "sd35" if is_sd35 else "sd3"
    ckpt, clip = work / f"{name}-small-mmdit.safetensors", work / "clip_l-random.safetensors"
    if not ckpt.exists():
        mmdit = MMDiTConfig(depth=2, hidden_size=128, num_heads=2, pos_embed_max_size=32, qk_norm=is_sd35 or is_large,
                            dual_attention_blocks=(0,) if is_sd35 and not is_large else ())
        vae = VAEConfig(z_channels=16, embed_dim=16, has_quant_conv=False)
        write_random_sd3_checkpoint(ckpt, Sd3CheckpointSpec(mmdit, vae, seed=3))
    if not clip.exists():
        write_random_text_encoder(clip, "clip_l", text_encoder_config("sd1"), torch.float16, seed=5)
    return ckpt, clip


def write_controlnet(work: Path, size: int, layout: str = "diffusers",
                     control_type: str = "canny") -> tuple[Path, Path]:
    """A random SD3 ControlNet in diffusers' SD3ControlNetModel layout (1 block, the small MM-DiT's width and
    SD3's context / pooled widths), or in Stability's SD3.5 layout (1 block, the small MM-DiT's width, pooled
    2048, `control_type`), and a deterministic hint image [1, size, size, 3] in 0..1."""
    import torch
    from diffusers import SD3ControlNetModel
    from safetensors.torch import save_file
    if layout == "stability":
        from models.testing import sd35_controlnet_config, write_random_sd35_controlnet
        path = work / f"sd35-controlnet-{control_type}-1block.safetensors"
        if not path.exists():
            write_random_sd35_controlnet(path, sd35_controlnet_config(hidden=128, blocks=1, adm=2048),
                                         control_type=control_type, seed=7)
    else:
        path = work / "sd3-controlnet-1block.safetensors"
    hint = work / f"hint-{size}.npy"
    if not path.exists():
        net = SD3ControlNetModel(sample_size=32, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=64,
                                 num_attention_heads=2, joint_attention_dim=4096, caption_projection_dim=128,
                                 pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=32)
        g = torch.Generator().manual_seed(7)
        state = {}
        for name, p in net.state_dict().items():   # zero-initialised output layers get weights too
            scale = 1.0 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.1
            state[name] = (torch.randn(p.shape, generator=g) * scale + (1.0 if p.ndim == 1 and "norm" in name
                                                                         else 0.0)).contiguous()
        save_file(state, str(path))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    pattern = np.stack([0.5 + 0.4 * np.sin(6 * xx), 0.5 + 0.4 * np.cos(5 * yy), (xx > 0.5).astype(np.float32)], -1)
    np.save(hint, pattern[None].astype(np.float32))
    return path, hint


def plexus_pixels(cfg: dict) -> np.ndarray:
    import torch

    from diffusion import conditioning, ksampler, loading, sd3, vae_ops
    from model_management import MemorySettings, ModelManager
    manager = ModelManager(MemorySettings(force_fp32=not cfg.get("plexus_default")))
    model, clip, vae = loading.load_checkpoint_file(cfg["ckpt"], manager)
    if cfg["clip"] is not None:
        clip = sd3.load_text_encoder_files(cfg["clip"], manager)
    pos, neg = conditioning.encode_text(clip, cfg["positive"]), conditioning.encode_text(clip, cfg["negative"])
    if cfg.get("controlnet"):
        from diffusion import controlnet
        net = controlnet.load_control_file(cfg["controlnet"], manager)
        pos, neg = controlnet.apply_control(pos, neg, net, torch.from_numpy(np.load(cfg["hint"])),
                                            strength=cfg["cn_strength"], vae=vae)
    latent = {"samples": torch.zeros(1, 16, cfg["size"] // 8, cfg["size"] // 8)}
    out = ksampler.ksample(model, latent, pos, neg, seed=cfg["seed"], steps=cfg["steps"], cfg=cfg["cfg"],
                           sampler_name=cfg["sampler"], scheduler=cfg["scheduler"])
    image = vae_ops.decode(vae, out["samples"])
    return np.clip(255.0 * image[0].cpu().numpy(), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-dir", type=Path, required=True)
    parser.add_argument("--peer-python", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/plexus-sd3-pixels"))
    parser.add_argument("--sd35", action="store_true")
    parser.add_argument("--sd35-large", action="store_true",
                        help="the small MM-DiT in SD3.5 large's layout (QK-norm, no dual attention)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="simple")
    parser.add_argument("--plexus-default", action="store_true",
                        help="Plexus in its default dtypes (bf16 on a CPU) against ComfyUI in fp32: the distance")
    parser.add_argument("--peer-default", action="store_true",
                        help="ComfyUI without --force-fp32 (its CPU default: fp32 MM-DiT, fp16-stored CLIP)")
    parser.add_argument("--text-encoders", type=Path, nargs="+",
                        help="with --full: standalone clip_l / clip_g / t5xxl files (SD3.5 medium ships none)")
    parser.add_argument("--both", action="store_true", help="Plexus in fp32, then in its default mode")
    parser.add_argument("--full", type=Path,
                        help="an SD3 all-in-one file (bench/sd3_memory.py's full-size one) with its own CLIP-L, "
                             "CLIP-G and fp8 T5-XXL instead of the small files (heavy: run under the lock)")
    parser.add_argument("--controlnet", nargs="?", const="diffusers", choices=("diffusers", "stability"),
                        help="apply a random 1-block SD3 ControlNet (diffusers layout, or Stability's SD3.5 layout) "
                             "with a latent hint (vae input)")
    parser.add_argument("--control-type", default="canny", choices=("blur", "canny", "depth"),
                        help="with --controlnet stability: the file's control_type (how the hint is prepared)")
    parser.add_argument("--cn-strength", type=float, default=0.8)
    args = parser.parse_args(argv)
    if args.full:
        ckpt, clip = args.full, [str(p) for p in args.text_encoders] if args.text_encoders else None
    else:
        args.sd35_large = args.sd35_large or args.controlnet == "stability"
        ckpt, small_clip = write_files(args.work, args.sd35, args.sd35_large)
        clip = [str(small_clip)]
    controlnet, hint = (write_controlnet(args.work, args.size, args.controlnet, args.control_type)
                        if args.controlnet else (None, None))
    cfg = {"peer_dir": str(args.peer_dir.resolve()), "ckpt": str(ckpt), "clip": clip, "size": args.size,
           "seed": 42, "steps": args.steps, "cfg": 4.5, "sampler": args.sampler, "scheduler": args.scheduler,
           "positive": "a (red:1.2) photo of a cat", "negative": "blurry",
           "out": str(args.work / "peer.npy"), "plexus_default": args.plexus_default,
           "peer_fp32": not args.peer_default, "controlnet": controlnet and str(controlnet),
           "hint": hint and str(hint), "cn_strength": args.cn_strength}
    args.work.mkdir(parents=True, exist_ok=True)
    python = args.peer_python or args.peer_dir.parent / "venv" / "bin" / "python"
    subprocess.run([str(python), "-c", PEER_SCRIPT, json.dumps(cfg)], check=True)
    theirs = np.load(cfg["out"]).astype(np.int16)
    for plexus_default in ([False, True] if args.both else [args.plexus_default]):
        ours = plexus_pixels({**cfg, "plexus_default": plexus_default}).astype(np.int16)
        gc.collect()
        report(args, ours, theirs, plexus_default)
    return 0


def report(args: argparse.Namespace, ours: np.ndarray, theirs: np.ndarray, plexus_default: bool) -> None:
    diff = np.abs(ours - theirs)
    model = "sd35-large" if args.sd35_large else "sd35" if args.sd35 else "sd3"
    print(json.dumps({"model": str(args.full) if args.full else model,
                      "text_encoders": [str(p) for p in args.text_encoders or []],
                      "plexus": "default" if plexus_default else "fp32",
                      "comfyui": "default" if args.peer_default else "fp32", "shape": list(ours.shape),
                      "sampler": args.sampler, "controlnet": args.controlnet,
                      "control_type": args.control_type if args.controlnet == "stability" else None,
                      "scheduler": args.scheduler, "steps": args.steps, "max_abs_diff": int(diff.max()),
                      "mean_abs_diff": float(diff.mean()), "ours_std": float(ours.std()),
                      "peer_std": float(theirs.std())}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
