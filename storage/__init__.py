"""Folder layout, ``extra_model_paths.yaml`` and safe path resolution (stdlib + yaml only)."""
from storage.errors import StorageError, UnsafePathError
from storage.folders import Folders, SaveTarget
from storage.safe_paths import claim_free_path, next_free_name, resolve_inside, sanitize_filename

__all__ = ["StorageError", "UnsafePathError", "Folders", "SaveTarget", "resolve_inside",
           "sanitize_filename", "next_free_name", "claim_free_path"]
