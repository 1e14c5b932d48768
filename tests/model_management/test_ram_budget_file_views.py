"""The RAM budget counts memory a model owns, not the pages of a memory-mapped file its weights view.

A weight kept as stored (a bf16 file computed in bf16, FLUX's or T5-XXL's fp8 Linears) is a zero-copy view of
the mapped `.safetensors`: its pages are the file's (page cache, dropped and read back by the kernel), so
counting them made the full-size FLUX fp8 run (11.9 GB of views) drop a standalone VAE beside it, which then
failed with ModelDroppedError."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model_management import MemorySettings, ModelHandle, ModelManager, Placement
from models.files import load_state_dict, file_view_test

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="file views are told from /proc/self/maps")

KIB = 1024


def linears(kib: int, seed: int) -> nn.Sequential:
    """Exactly `kib` KiB of fp32 weights in 4 layers."""
    torch.manual_seed(seed)
    return nn.Sequential(*(nn.Linear(kib * KIB // 16, 1, bias=False) for _ in range(4)))


def mapped_linears(path: Path, kib: int, seed: int):
    """`linears(kib)` written to `path` and loaded back as views of the mapped file (no copy)."""
    save_file({k: v.contiguous() for k, v in linears(kib, seed).state_dict().items()}, str(path))
    source = load_state_dict(path)
    with torch.device("meta"):
        module = linears(kib, seed)
    module.load_state_dict(dict(source), assign=True)
    assert all(source.holds(p.data) for p in module.parameters())
    return module, source


def test_views_of_a_mapped_file_do_not_drop_a_model_that_owns_its_memory(tmp_path: Path) -> None:
    manager = ModelManager(MemorySettings(device="cpu", ram_budget_bytes=100 * KIB), file_views=file_view_test)
    vae = ModelHandle(linears(40, 1), name="vae")                  # owned memory, no reload: a drop is final
    manager.load_models_for([vae])
    module, source = mapped_linears(tmp_path / "big.safetensors", 160, 2)
    big = manager.register(ModelHandle(module, name="big"))          # 160 KiB of views, over the budget alone
    manager.load_models_for([big])
    manager.load_models_for([vae])                                  # before: ModelDroppedError
    assert manager.record_of(vae).placement is Placement.FULL
    assert manager.record_of(big).placement is not Placement.DROPPED
    assert manager.ram_used_bytes() == 40 * KIB and manager.file_view_bytes() == 160 * KIB
    report = manager.report()
    assert report["ram"]["models"] == 40 * KIB and report["ram"]["models_file_views"] == 160 * KIB
    described = {m["name"]: (m["ram_bytes"], m["file_view_bytes"]) for m in report["models"]}
    assert described == {"vae": (40 * KIB, 0), "big": (0, 160 * KIB)}
    source.close()


def test_models_that_own_their_memory_still_count(tmp_path: Path) -> None:
    """The same file loaded as copies (a converted dtype owns its memory) counts in full: the budget drops."""
    manager = ModelManager(MemorySettings(device="cpu", ram_budget_bytes=100 * KIB), file_views=file_view_test)
    first = ModelHandle(linears(40, 1), name="first")
    manager.load_models_for([first])
    module, source = mapped_linears(tmp_path / "big.safetensors", 160, 2)
    for p in module.parameters():
        p.data = p.data.clone()                                     # a converted copy, not a view
    big = manager.register(ModelHandle(module, name="big"))
    assert manager.record_of(first) is None                         # dropped for good (no reload)
    assert manager.ram_used_bytes() == 160 * KIB and manager.file_view_bytes() == 0
    assert manager.record_of(big).placement is Placement.RAM
    source.close()


def test_a_standalone_vae_survives_a_flux_fp8_model_through_the_loaders(tmp_path: Path) -> None:
    """The full-size failure at tiny size, through the node services' model manager: VAELoader's VAE (fp16 file,
    converted: owned memory, no reload) then UNETLoader's fp8 FLUX (views of its file) under a RAM budget above
    the VAE's size and below the two together; the VAE must still decode."""
    from diffusion.flux import load_diffusion_model_file
    from diffusion.loading import load_vae_file
    from diffusion.vae_ops import decode
    from models.testing import flux_vae_config, tiny_flux_config, write_random_flux, write_random_vae
    from nodes.services import NodeServices
    from storage.folders import Folders

    vae_path = write_random_vae(tmp_path / "ae.safetensors", flux_vae_config(), torch.float16, seed=4)
    flux_path = write_random_flux(tmp_path / "flux_fp8.safetensors", tiny_flux_config(), dtype=torch.float8_e4m3fn)
    budget = 2 * vae_path.stat().st_size + flux_path.stat().st_size // 2       # the fp32 VAE + half the FLUX file
    settings = MemorySettings(device="cpu", force_fp32=True, ram_budget_bytes=budget)
    manager = NodeServices(Folders(tmp_path / "base"), settings=settings).model_manager()
    vae = load_vae_file(vae_path, manager)
    vae_bytes = manager.ram_used_bytes()
    assert 0 < vae_bytes < budget and manager.file_view_bytes() == 0
    model = load_diffusion_model_file(flux_path, manager)
    views = manager.report()["models"][0]
    assert views["name"] == model.name and views["file_view_bytes"] > flux_path.stat().st_size // 2
    assert manager.ram_used_bytes() <= budget < vae_bytes + views["file_view_bytes"]  # the old count: over budget
    image = decode(vae, torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0)))
    assert image.shape[-3:] == (32, 32, 3) and torch.isfinite(image).all()
    assert manager.record_of(vae).placement is not Placement.DROPPED
