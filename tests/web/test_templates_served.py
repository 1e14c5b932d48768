"""/templates as the editor's template browser reads it: Plexus's demo first, then the official
index with unsupported templates marked, workflows from the JSON package."""
from __future__ import annotations

import json

from web.editor import OWN_TEMPLATES, TemplateSources
from web.template_catalog import UNSUPPORTED_TAG


def test_index_lists_our_demo_first_then_marked_official_templates() -> None:
    sources = TemplateSources(registered={"CheckpointLoaderSimple", "KSampler"})
    index = sources.index("index.json")
    own = json.loads((OWN_TEMPLATES / "index.json").read_text())
    assert index[:len(own)] == own
    official = [t for category in index[len(own):] for t in category["templates"]]
    assert len(official) > 600
    video = next(t for t in official if t["name"].startswith("video_wan"))
    assert UNSUPPORTED_TAG in video["tags"] and "not supported by Plexus" in video["title"]
    assert sources.workflow(video["name"])["nodes"]
    assert sources.file(f"{video['name']}.json") is not None
    assert sources.index("index.json") is not index and sources.index("index.fr.json")[0] == own[0]


def test_without_a_registry_the_official_index_is_served_unchanged() -> None:
    index = TemplateSources().index("index.json")
    assert not any(UNSUPPORTED_TAG in t.get("tags", []) for c in index for t in c["templates"])
    assert TemplateSources().file("../../etc/passwd") is None
