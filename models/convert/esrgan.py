"""ESRGAN key layouts -> the BasicSR / Real-ESRGAN names that `models.upscale.RRDBNet` uses.

Two layouts exist in the wild for the same RRDBNet (Wang et al. 2018, https://arxiv.org/abs/1809.00219):

- "old" ESRGAN (xinntao/ESRGAN before its 2019 rewrite, most community models): one `nn.Sequential`
  called `model`: `model.0` first conv, `model.1.sub.N.RDB{1,2,3}.conv{1..5}.0` the RRDB trunk with
  `model.1.sub.<num_blocks>` the trunk conv, then per 2x stage an (upsample, conv, LeakyReLU) triple so the
  upsampling convs sit at `model.3`, `model.6`, ..., then the HR conv and the last conv two indices apart
  (x4: 3, 6, 8, 10; x2: 3, 5, 7; x8: 3, 6, 9, 11, 13).
- BasicSR / Real-ESRGAN: `conv_first`, `body.N.rdb{1,2,3}.conv{1..5}`, `conv_body`, `conv_up1..`,
  `conv_hr`, `conv_last` (already our names).

`old_to_basicsr` is pure and raises `KeyMismatchError` listing any key it cannot place.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

from models.errors import KeyMismatchError, summarise_keys

V = TypeVar("V")

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def old_top_level_convs(keys) -> list[int]:
    """Sorted `model.<i>` conv indices after the trunk (upsampling convs, then HR conv, then last conv)."""
    found = {int(m.group(1)) for k in keys if (m := _OLD_TOP.match(k))}
    return sorted(i for i in found if i > 1)


def old_to_basicsr(state: Mapping[str, V]) -> dict[str, V]:
    """Rename an old-layout ESRGAN state dict (values untouched: tensors or shapes) to BasicSR names."""
    trunk_ids = {int(m.group(1)) for k in state if (m := _OLD_TRUNK.match(k))}
    tail = old_top_level_convs(state)
    if len(trunk_ids) != 1 or len(tail) < 2:
        raise KeyMismatchError("old-layout ESRGAN state dict without a trunk conv or its last two convs",
                               f"trunk conv candidates model.1.sub.{sorted(trunk_ids)}, top-level convs "
                               f"model.{tail}")
    trunk_id = trunk_ids.pop()
    top_names = {i: f"conv_up{n + 1}" for n, i in enumerate(tail[:-2])}
    top_names[tail[-2]], top_names[tail[-1]] = "conv_hr", "conv_last"
    top_names[0] = "conv_first"
    out: dict[str, V] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        if m := _OLD_RDB.match(key):
            block, rdb, conv, kind = m.groups()
            if int(block) >= trunk_id:
                unmapped.append(key)
                continue
            out[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        elif (m := _OLD_TRUNK.match(key)) and int(m.group(1)) == trunk_id:
            out[f"conv_body.{m.group(2)}"] = value
        elif (m := _OLD_TOP.match(key)) and int(m.group(1)) in top_names:
            out[f"{top_names[int(m.group(1))]}.{m.group(2)}"] = value
        else:
            unmapped.append(key)
    if unmapped:
        raise KeyMismatchError("old-layout ESRGAN state dict has keys that fit no RRDBNet part",
                               "unmapped: " + summarise_keys(unmapped))
    return out
