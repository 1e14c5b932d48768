"""Load k-diffusion's `sampling.py` as an independent reference, without its heavy package.

`pip install --no-deps k-diffusion==0.1.1.post1` (see requirements-test-nodeps.txt). The package
`__init__` imports torchvision, PIL, wandb and more; `sampling.py` itself only needs scipy, torchsde,
tqdm, `torchdiffeq.odeint` (used by `log_likelihood` only) and `utils.append_dims`. We load that one
file under a private package name with two tiny shims, touching nothing global.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest


def load_k_sampling():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("k-diffusion is not installed: bash scripts/test.sh installs it "
                    "(pip install --no-deps -r requirements-test-nodeps.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
    name = "_kdiff_ref"
    if f"{name}.sampling" in sys.modules:
        return sys.modules[f"{name}.sampling"]

    package = types.ModuleType(name)
    package.__path__ = []  # a namespace for the relative import
    utils = types.ModuleType(f"{name}.utils")

    def append_dims(x, target_dims):   # k_diffusion.utils.append_dims
        return x[(...,) + (None,) * (target_dims - x.ndim)]
    utils.append_dims = append_dims
    package.utils = utils

    saved = {k: sys.modules.get(k) for k in ("torchdiffeq",)}
    if importlib.util.find_spec("torchdiffeq") is None:
        shim = types.ModuleType("torchdiffeq")
        shim.odeint = None
        sys.modules["torchdiffeq"] = shim
    sys.modules[name] = package
    sys.modules[f"{name}.utils"] = utils
    try:
        mod_spec = importlib.util.spec_from_file_location(f"{name}.sampling", path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[f"{name}.sampling"] = module
        mod_spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module
