"""PNG files of 8 or 16 bits per channel with ComfyUI's text metadata (SaveImageAdvanced's "png" format).

8-bit images go through Pillow as SaveImage's do. Pillow cannot write 16-bit RGB(A), so those are encoded
here from the PNG specification (W3C PNG, 3rd edition): the signature, IHDR (bit depth 16, colour type 2
RGB / 6 RGBA), one zlib-compressed IDAT of filter-type-0 scanlines of big-endian samples, the tEXt chunks
("prompt" and each extra_pnginfo entry, JSON, as SaveImage writes them) and IEND; each chunk carries its
CRC-32 over type and data.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import SaveTarget, png_metadata, to_pil

BIT_DEPTHS = ("8-bit", "16-bit")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def text_entries(prompt: dict | None, extra_pnginfo: dict | None) -> list[tuple[str, str]]:
    entries = [("prompt", json.dumps(prompt))] if prompt is not None else []
    return entries + [(key, json.dumps(value)) for key, value in (extra_pnginfo or {}).items()]


def encode_png16(image: torch.Tensor, texts: list[tuple[str, str]] = (), compress_level: int = 4) -> bytes:
    """One image [H, W, 3 or 4] in 0..1 as a 16-bit RGB / RGBA PNG (values round(65535 v), clipped)."""
    pixels = np.clip(np.rint(image.detach().float().cpu().numpy() * 65535.0), 0, 65535).astype(">u2")
    height, width, channels = pixels.shape
    if channels not in (3, 4):
        raise ValueError(f"a 16-bit PNG needs 3 or 4 channels, got {channels}")
    rows = pixels.reshape(height, width * channels).tobytes()
    stride = width * channels * 2
    raw = b"".join(b"\x00" + rows[row * stride:(row + 1) * stride] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2 if channels == 3 else 6, 0, 0, 0)
    text = b"".join(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("utf-8"))
                    for key, value in texts)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + text
            + _chunk(b"IDAT", zlib.compress(raw, compress_level)) + _chunk(b"IEND", b""))


def save_png_images(images: torch.Tensor, target: SaveTarget, *, bit_depth: str, kind: str = "output",
                    prompt: dict | None = None, extra_pnginfo: dict | None = None,
                    with_metadata: bool = True) -> list[dict[str, Any]]:
    """Every image of a batch as ``<filename>_<counter:05>.png`` (SaveImageAdvanced's names: no trailing
    underscore); returns the UI entries."""
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit depth {bit_depth!r} is not one of {', '.join(BIT_DEPTHS)}")
    results, counter = [], target.counter
    for number, image in enumerate(images):
        name = f"{target.filename.replace('%batch_num%', str(number))}_{counter:05}.png"
        path: Path = target.folder / name
        if bit_depth == "16-bit":
            texts = text_entries(prompt, extra_pnginfo) if with_metadata else []
            path.write_bytes(encode_png16(image, texts))
        else:
            to_pil(image).save(path, pnginfo=png_metadata(prompt, extra_pnginfo) if with_metadata else None,
                               compress_level=4)
        results.append({"filename": name, "subfolder": target.subfolder, "type": kind})
        counter += 1
    return results
