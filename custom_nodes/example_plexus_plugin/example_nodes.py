"""Three pure-Python example nodes written against the classic protocol."""
from __future__ import annotations

import os


def _output_directory() -> str:
    """Plexus's output folder, or ComfyUI's when this plugin runs there."""
    try:
        from nodes.services import folders  # Plexus
        return str(folders().output)
    except ImportError:
        import folder_paths  # ComfyUI
        return folder_paths.get_output_directory()


def _progress(total: int):
    """A ``step(value)`` callable that reports progress to the editor (Plexus or ComfyUI)."""
    try:
        from execution.protocol import current_context  # Plexus
        context = current_context()
        if context is None:
            return lambda value: None

        def step(value: int) -> None:
            context.check_interrupted()
            context.report_progress(value, total)
        return step
    except ImportError:
        import comfy.utils  # ComfyUI
        bar = comfy.utils.ProgressBar(total)
        return lambda value: bar.update_absolute(value, total)


class ExampleRepeatText:
    """Repeat a text a number of times, with a separator."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"default": "hello", "multiline": False}),
                "times": ("INT", {"default": 2, "min": 1, "max": 1000, "step": 1}),
            },
            "optional": {
                "separator": ("STRING", {"default": " "}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "repeat"
    CATEGORY = "examples/text"
    DESCRIPTION = "Repeats a text; shows how a classic plugin node is written."

    def repeat(self, text, times, separator=" "):
        return (separator.join([text] * times),)


class ExampleCountSteps:
    """Count up to ``steps``, reporting progress at every step (exercises progress bars)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 10, "min": 1, "max": 100000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "count"
    CATEGORY = "examples"

    def count(self, steps):
        step = _progress(steps)
        for value in range(1, steps + 1):
            step(value)
        return (steps,)


class ExampleSaveText:
    """Write a text file into the output folder as ``<prefix>_00001_.txt`` and show it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"forceInput": True}),
            "filename_prefix": ("STRING", {"default": "plexus_text"}),
        }}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "examples/text"

    def save(self, text, filename_prefix):
        output_dir = os.path.realpath(_output_directory())
        prefix = os.path.normpath(filename_prefix)
        folder = os.path.realpath(os.path.join(output_dir, os.path.dirname(prefix)))
        if os.path.commonpath([output_dir, folder]) != output_dir:
            raise ValueError(f"filename_prefix {filename_prefix!r} leaves the output folder")
        os.makedirs(folder, exist_ok=True)
        base = os.path.basename(prefix)
        counter = 1
        while True:
            filename = f"{base}_{counter:05}_.txt"
            try:
                with open(os.path.join(folder, filename), "x", encoding="utf-8") as handle:
                    handle.write(text)
                break
            except FileExistsError:
                counter += 1
        subfolder = os.path.relpath(folder, output_dir).replace(os.sep, "/")
        entry = {"filename": filename, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}
        return {"ui": {"text": [text], "files": [entry]}}


NODE_CLASS_MAPPINGS = {
    "ExampleRepeatText": ExampleRepeatText,
    "ExampleCountSteps": ExampleCountSteps,
    "ExampleSaveText": ExampleSaveText,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ExampleRepeatText": "Repeat Text (example)",
    "ExampleCountSteps": "Count Steps (example)",
    "ExampleSaveText": "Save Text (example)",
}
