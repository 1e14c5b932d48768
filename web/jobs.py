"""Shapes: queue items, history entries and jobs, built from what the PromptStore returns.

The store returns queue entries ``[number, prompt_id, prompt, extra_data, outputs_to_execute]`` for
pending / running prompts and ComfyUI-shaped history entries (``{"prompt": <queue entry>, "outputs",
"status": {"status_str", "completed", "messages"}, "meta", "plexus"}``) for finished ones. The editor
1.58 reads neither /queue nor /history but ``/jobs``; this module turns both into job items with the
schema the editor validates (``id``, ``status`` in the five allowed values, ``create_time`` in ms).
"""

from __future__ import annotations

from typing import Any, Iterable

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
FINISHED = frozenset({"completed", "failed", "cancelled"})
MEDIA_KEYS = ("images", "video", "audio", "gifs", "animated", "3d")


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def record_id(record: Any) -> str:
    if isinstance(record, (list, tuple)):
        return str(record[1])
    return str(_field(record, "prompt_id"))


def queue_item(record: Any) -> list[Any]:
    """ComfyUI's queue tuple: ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    if isinstance(record, (list, tuple)):
        return list(record)
    return [
        _field(record, "number", 0),
        record_id(record),
        _field(record, "prompt", {}),
        _field(record, "extra_data", {}) or {},
        list(_field(record, "outputs_to_execute", []) or []),
    ]


def _create_time(record_or_extra: Any, fallback: Any = None) -> int:
    value = _field(record_or_extra, "create_time_ms")
    if value is None and isinstance(record_or_extra, dict):
        value = (record_or_extra.get("extra_data") or {}).get("create_time")
    if value is None:
        value = fallback
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _workflow_id(extra_data: dict[str, Any]) -> str | None:
    workflow = ((extra_data or {}).get("extra_pnginfo") or {}).get("workflow")
    if isinstance(workflow, dict) and isinstance(workflow.get("id"), str):
        return workflow["id"]
    return None


def job_from_record(record: Any, status: str) -> dict[str, Any]:
    number, prompt_id, _prompt, extra, _outputs = queue_item(record)
    extra = extra if isinstance(extra, dict) else {}
    return {
        "id": prompt_id,
        "status": status,
        "create_time": _create_time({"extra_data": extra}),
        "priority": number,
        "execution_start_time": None,
        "execution_end_time": None,
        "outputs_count": 0,
        "previewable_outputs_count": 0,
        "preview_output": None,
        "workflow_id": _workflow_id(extra),
    }


def messages_of(entry: dict[str, Any]) -> list[Any]:
    return list(((entry.get("status") or {}).get("messages")) or [])


def history_status(entry: dict[str, Any]) -> str:
    """completed / failed / cancelled for a finished entry."""
    plexus_status = (entry.get("plexus") or {}).get("status")
    if plexus_status in ("success", "error", "interrupted"):
        return {"success": "completed", "error": "failed", "interrupted": "cancelled"}[plexus_status]
    status = entry.get("status") or {}
    kinds = {m[0] for m in messages_of(entry) if isinstance(m, (list, tuple)) and m}
    if "execution_interrupted" in kinds:
        return "cancelled"
    if status.get("status_str") == "success" or "execution_success" in kinds:
        return "completed"
    return "failed"


def _message_time(entry: dict[str, Any], kinds: Iterable[str]) -> int | None:
    for message in messages_of(entry):
        if isinstance(message, (list, tuple)) and len(message) == 2 and message[0] in kinds:
            stamp = (message[1] or {}).get("timestamp")
            if isinstance(stamp, (int, float)):
                return int(stamp)
    return None


def _outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    count = previewable = 0
    preview = None
    for node_id, ui in (outputs or {}).items():
        if not isinstance(ui, dict):
            continue
        for key, items in ui.items():
            if not isinstance(items, list) or key == "animated":
                continue
            count += len(items)
            if key in MEDIA_KEYS:
                for item in items:
                    if isinstance(item, dict) and "filename" in item:
                        previewable += 1
                        if preview is None or (
                            item.get("type") == "output" and preview.get("type") != "output"
                        ):
                            preview = {**item, "nodeId": str(node_id), "mediaType": key}
    return count, previewable, preview


def job_from_history(prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    queued = entry.get("prompt") or [0, prompt_id, {}, {}, []]
    extra = queued[3] if len(queued) > 3 and isinstance(queued[3], dict) else {}
    count, previewable, preview = _outputs_summary(entry.get("outputs") or {})
    status = history_status(entry)
    plexus = entry.get("plexus") or {}
    start = _message_time(entry, ("execution_start",)) or plexus.get("execution_start_time_ms")
    end = _message_time(
        entry, ("execution_success", "execution_error", "execution_interrupted")
    ) or plexus.get("execution_end_time_ms")
    job = {
        "id": prompt_id,
        "status": status,
        "create_time": _create_time({"extra_data": extra}, plexus.get("create_time_ms", 0)),
        "priority": queued[0] if queued else 0,
        "execution_start_time": start,
        "execution_end_time": end,
        "outputs_count": count,
        "previewable_outputs_count": previewable,
        "preview_output": preview,
        "workflow_id": _workflow_id(extra),
    }
    if status == "failed":
        error = next(
            (
                m[1]
                for m in messages_of(entry)
                if isinstance(m, (list, tuple)) and len(m) == 2 and m[0] == "execution_error"
            ),
            None,
        )
        if isinstance(error, dict):
            job["execution_error"] = {
                "node_id": str(error.get("node_id", "")),
                "node_type": str(error.get("node_type", "")),
                "exception_message": str(error.get("exception_message", "")),
                "exception_type": str(error.get("exception_type", "")),
                "traceback": [str(t) for t in error.get("traceback") or []],
                **{
                    k: v
                    for k, v in error.items()
                    if k not in ("node_id", "node_type", "exception_message", "exception_type", "traceback")
                },
            }
    return job


def job_detail_from_history(prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    job = job_from_history(prompt_id, entry)
    queued = entry.get("prompt") or [0, prompt_id, {}, {}, []]
    job.update(
        {
            "outputs": entry.get("outputs") or {},
            "execution_status": entry.get("status") or {},
            "execution_meta": entry.get("meta") or {},
            "workflow": {
                "prompt": queued[2] if len(queued) > 2 else {},
                "extra_data": queued[3] if len(queued) > 3 else {},
            },
        }
    )
    return job


def job_detail_from_record(record: Any, status: str) -> dict[str, Any]:
    job = job_from_record(record, status)
    _number, _id, prompt, extra, _outputs = queue_item(record)
    job.update({"outputs": {}, "workflow": {"prompt": prompt, "extra_data": extra}})
    return job


def parse_statuses(text: str | None) -> list[str]:
    if not text:
        return list(JOB_STATUSES)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in JOB_STATUSES]
    if unknown:
        raise ValueError(f"unknown job status {unknown[0]!r}; use any of {', '.join(JOB_STATUSES)}")
    return wanted
