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
    official = [t for category in index[len(own):] for t in category["templates"]]
    assert len(official) > 600
    # ours, ranked above every official template in the editor's first view ("Popular": by usage)
    top = max(t.get("usage", 0) for t in official)
    ranked = [{**category, "templates": [{**t, "usage": top + 1} for t in category["templates"]]}
              for category in own]
    assert index[:len(own)] == ranked
    video = next(t for t in official if t["name"].startswith("video_wan"))
    assert UNSUPPORTED_TAG in video["tags"] and "not supported by Plexus" in video["title"]
    assert sources.workflow(video["name"])["nodes"]
    assert sources.file(f"{video['name']}.json") is not None
    assert sources.index("index.json") is not index and sources.index("index.fr.json")[0] == ranked[0]


def test_without_a_registry_the_official_index_is_served_unchanged() -> None:
    index = TemplateSources().index("index.json")
    assert not any(UNSUPPORTED_TAG in t.get("tags", []) for c in index for t in c["templates"])
    assert TemplateSources().file("../../etc/passwd") is None


def test_missing_official_thumbnails_are_a_neutral_tile_not_a_404(tmp_path) -> None:
    from web.editor import _THUMBNAIL, _placeholder_thumbnail
    assert _THUMBNAIL.fullmatch("video_wan2_2_14B_i2v-1.webp") and not _THUMBNAIL.fullmatch("../x-1.webp")
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(_placeholder_thumbnail())).format == "WEBP"
