"""ComfyUI's ``comfy_api.latest.ui``: what a V3 node returns as ``NodeOutput(ui=...)``.

Images are written with Plexus's own writers (``imaging.files``) into the folders of the ``folder_paths``
face, named as ComfyUI names them (``<prefix>_<counter:05>_.png``); the ``executed`` entries
(``{"filename", "subfolder", "type"}``) are ComfyUI's. Audio needs PyAV (``av``), which Plexus does not
install; without it the audio helpers raise a clear error.
"""
from __future__ import annotations

import io as _bytes_io
import os
import random
import string
from typing import Any

from comfy_api.latest._io import FolderType, _UIOutput


class SavedResult(dict):
    """One written file as the editor reads it: ``{"filename", "subfolder", "type"}``."""

    def __init__(self, filename: str, subfolder: str, type: FolderType):
        super().__init__(filename=filename, subfolder=subfolder, type=FolderType(type).value)

    @property
    def filename(self) -> str:
        return self["filename"]

    @property
    def subfolder(self) -> str:
        return self["subfolder"]

    @property
    def type(self) -> FolderType:
        return FolderType(self["type"])


class SavedImages(_UIOutput):
    def __init__(self, results: list[SavedResult], is_animated: bool = False):
        self.results = results
        self.is_animated = is_animated

    def as_dict(self) -> dict:
        data: dict = {"images": self.results}
        if self.is_animated:
            data["animated"] = (True,)
        return data


class SavedAudios(_UIOutput):
    def __init__(self, results: list[SavedResult]):
        self.results = results

    def as_dict(self) -> dict:
        return {"audio": self.results}


def _directory(folder_type: FolderType) -> str:
    import folder_paths

    return {FolderType.input: folder_paths.get_input_directory,
            FolderType.output: folder_paths.get_output_directory}.get(FolderType(folder_type),
                                                                      folder_paths.get_temp_directory)()


def _metadata_source(cls: Any) -> tuple[Any, Any]:
    """(prompt, extra_pnginfo) to embed, from the node's hidden values; nothing with --disable-metadata."""
    from comfy.cli_args import args

    hidden = getattr(cls, "hidden", None) if cls is not None else None
    if args.disable_metadata or hidden is None:
        return None, None
    return hidden.prompt, hidden.extra_pnginfo


def _temp_prefix() -> str:
    return "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))


class ImageSaveHelper:
    """Writers for IMAGE batches ([B, H, W, C] in 0..1)."""

    @staticmethod
    def _convert_tensor_to_pil(image_tensor: Any) -> Any:
        from imaging.files import to_pil

        return to_pil(image_tensor)

    @staticmethod
    def _create_png_metadata(cls: Any) -> Any:
        from imaging.files import png_metadata

        prompt, extra = _metadata_source(cls)
        return png_metadata(prompt, extra) if prompt is not None or extra else None

    @staticmethod
    def save_images(images: Any, filename_prefix: str, folder_type: FolderType, cls: Any,
                    compress_level: int = 4) -> list[SavedResult]:
        """Every image of the batch as its own PNG."""
        import folder_paths

        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, _directory(folder_type), images[0].shape[1], images[0].shape[0])
        metadata = ImageSaveHelper._create_png_metadata(cls)
        results = []
        for number, image in enumerate(images):
            name = f"{filename.replace('%batch_num%', str(number))}_{counter:05}_.png"
            ImageSaveHelper._convert_tensor_to_pil(image).save(os.path.join(folder, name), pnginfo=metadata,
                                                               compress_level=compress_level)
            results.append(SavedResult(name, subfolder, folder_type))
            counter += 1
        return results

    @staticmethod
    def get_save_images_ui(images: Any, filename_prefix: str, cls: Any, compress_level: int = 4) -> SavedImages:
        return SavedImages(ImageSaveHelper.save_images(images, filename_prefix=filename_prefix,
                                                       folder_type=FolderType.output, cls=cls,
                                                       compress_level=compress_level))

    @staticmethod
    def _save_animated(images: Any, filename_prefix: str, folder_type: FolderType, extension: str,
                       **save_options: Any) -> SavedResult:
        import folder_paths

        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, _directory(folder_type), images[0].shape[1], images[0].shape[0])
        frames = [ImageSaveHelper._convert_tensor_to_pil(image) for image in images]
        name = f"{filename}_{counter:05}_.{extension}"
        frames[0].save(os.path.join(folder, name), save_all=True, append_images=frames[1:], **save_options)
        return SavedResult(name, subfolder, folder_type)

    @staticmethod
    def save_animated_png(images: Any, filename_prefix: str, folder_type: FolderType, cls: Any, fps: float,
                          compress_level: int) -> SavedResult:
        return ImageSaveHelper._save_animated(images, filename_prefix, folder_type, "png",
                                              pnginfo=ImageSaveHelper._create_png_metadata(cls),
                                              compress_level=compress_level, duration=int(1000.0 / fps))

    @staticmethod
    def get_save_animated_png_ui(images: Any, filename_prefix: str, cls: Any, fps: float,
                                 compress_level: int) -> SavedImages:
        result = ImageSaveHelper.save_animated_png(images, filename_prefix, FolderType.output, cls, fps,
                                                   compress_level)
        return SavedImages([result], is_animated=len(images) > 1)

    @staticmethod
    def save_animated_webp(images: Any, filename_prefix: str, folder_type: FolderType, cls: Any, fps: float,
                           lossless: bool, quality: int, method: int) -> SavedResult:
        return ImageSaveHelper._save_animated(images, filename_prefix, folder_type, "webp",
                                              duration=int(1000.0 / fps), lossless=lossless, quality=quality,
                                              method=method)

    @staticmethod
    def get_save_animated_webp_ui(images: Any, filename_prefix: str, cls: Any, fps: float, lossless: bool,
                                  quality: int, method: int) -> SavedImages:
        result = ImageSaveHelper.save_animated_webp(images, filename_prefix, FolderType.output, cls, fps,
                                                    lossless, quality, method)
        return SavedImages([result], is_animated=len(images) > 1)


class AudioSaveHelper:
    @staticmethod
    def save_audio(audio: dict, filename_prefix: str, folder_type: FolderType, cls: Any, format: str = "flac",
                   quality: str = "128k") -> list[SavedResult]:
        raise NotImplementedError("saving audio needs PyAV, which Plexus does not install (pip install av); "
                                  "Plexus has no audio writer of its own yet")

    @staticmethod
    def get_save_audio_ui(audio: dict, filename_prefix: str, cls: Any, format: str = "flac",
                          quality: str = "128k") -> SavedAudios:
        return SavedAudios(AudioSaveHelper.save_audio(audio, filename_prefix, FolderType.output, cls, format,
                                                      quality))


class PreviewImage(_UIOutput):
    """Writes the batch into the temp folder (fast PNGs) and shows it under the node."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **kwargs: Any):
        self.values = ImageSaveHelper.save_images(image, filename_prefix=_temp_prefix(), folder_type=FolderType.temp,
                                                  cls=cls, compress_level=1)
        self.animated = animated

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    def __init__(self, mask: Any, animated: bool = False, cls: Any = None, **kwargs: Any):
        preview = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(preview, animated, cls, **kwargs)


class PreviewAudio(_UIOutput):
    def __init__(self, audio: dict, cls: Any = None, **kwargs: Any):
        self.values = AudioSaveHelper.save_audio(audio, _temp_prefix(), FolderType.temp, cls)

    def as_dict(self) -> dict:
        return {"audio": self.values}


class PreviewVideo(_UIOutput):
    def __init__(self, values: list, **kwargs: Any):
        self.values = values

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (True,)}


class PreviewUI3D(_UIOutput):
    def __init__(self, model_file: Any, camera_info: Any, **kwargs: Any):
        self.model_file = model_file
        self.camera_info = camera_info

    def as_dict(self) -> dict:
        return {"result": [self.model_file, self.camera_info]}


class PreviewText(_UIOutput):
    def __init__(self, value: str, **kwargs: Any):
        self.value = value

    def as_dict(self) -> dict:
        return {"text": (self.value,)}


def preview_of(image: Any) -> Any:
    """A progress preview (``execution.protocol.Preview``, JPEG bytes) of a PIL image or an IMAGE tensor."""
    from execution.protocol import Preview

    if hasattr(image, "shape"):     # IMAGE tensor: the first image of the batch
        from imaging.files import to_pil

        image = to_pil(image[0] if len(image.shape) == 4 else image)
    buffer = _bytes_io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return Preview("JPEG", buffer.getvalue())


__all__ = ["SavedResult", "SavedImages", "SavedAudios", "ImageSaveHelper", "AudioSaveHelper", "PreviewImage",
           "PreviewMask", "PreviewAudio", "PreviewVideo", "PreviewUI3D", "PreviewText"]
