"""ComfyUI's ``comfy_api`` for plugins: the V3 node schema (``comfy_api.latest``: ``io``, ``ui``,
``ComfyExtension``) and its versioned aliases (``v0_0_2``, ``v0_0_1``). V3 node classes answer the
classic protocol (INPUT_TYPES, RETURN_TYPES, FUNCTION, ...) computed from their ``define_schema()``, so
Plexus's registry, validator and executor run them on the same path as every other node."""
