"""ClientHub pieces without a server: preview frames and a stalled client's outbox."""

from __future__ import annotations

import json
import struct

from execution.protocol import Preview
from web.websocket import OUTBOX_LIMIT, Client, encode_preview


def test_preview_frames_in_both_spellings() -> None:
    meta = {
        "node_id": "3",
        "prompt_id": "p",
        "display_node_id": "3",
        "parent_node_id": None,
        "real_node_id": "3",
    }
    legacy = encode_preview(Preview("PNG", b"png-bytes"), meta, with_metadata=False)
    assert legacy == struct.pack(">II", 1, 2) + b"png-bytes"
    framed = encode_preview(Preview("JPEG", b"jpg"), meta, with_metadata=True)
    (kind, length) = struct.unpack(">II", framed[:8])
    assert kind == 4 and json.loads(framed[8 : 8 + length]) == {**meta, "image_type": "image/jpeg"}
    assert framed[8 + length :] == b"jpg"


def test_a_stalled_client_loses_previews_before_messages() -> None:
    client = Client("c", ws=None)  # type: ignore[arg-type]
    for i in range(OUTBOX_LIMIT - 1):
        client.put(f"text {i}")
    client.put(b"preview")
    client.put(b"dropped preview", droppable=True)  # full: a new preview is dropped
    assert list(client.outbox)[-1] == b"preview"
    client.put("important")  # full: the oldest preview makes room
    assert b"preview" not in client.outbox and client.outbox[-1] == "important"
    client.put("more")  # no preview left: the oldest text goes
    assert client.outbox[0] == "text 1" and len(client.outbox) == OUTBOX_LIMIT
