"""Model / CLIP merge nodes and the part savers (ComfyUI's specs). Merges are copy-on-write patches
(diffusion.merging); saving is diffusion.saving_parts. The per-architecture block merges (ModelMergeSD1,
SDXL, SD3_2B, ...) take one ratio per key prefix, with the prefixes themselves as input names."""
from __future__ import annotations

from diffusion import lora_extract, merging, saving_parts
from nodes import services
from nodes.spec import Boolean, Combo, Float, Hidden, Input, Int, String, node, optional

MERGING = "advanced/model_merging"


def _ratio() -> Float:
    return Float(1.0, min=0.0, max=1.0, step=0.01)


def _multiplier() -> Float:
    return Float(1.0, min=-10.0, max=10.0, step=0.01)


@node("ModelMergeSimple", category=MERGING, function="merge")
class ModelMergeSimple:
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    ratio = _ratio()
    RETURNS = ("MODEL",)

    def run(self, model1, model2, ratio: float) -> tuple:
        return (merging.merge_weighted(model1, model2, ratio),)


@node("ModelMergeBlocks", category=MERGING, function="merge")
class ModelMergeBlocks:
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    input = _ratio()
    middle = _ratio()
    out = _ratio()
    RETURNS = ("MODEL",)

    def run(self, model1, model2, **ratios: float) -> tuple:
        return (merging.merge_by_blocks(model1, model2, ratios),)


@node("ModelMergeSubtract", category=MERGING, function="merge")
class ModelMergeSubtract:
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    multiplier = _multiplier()
    RETURNS = ("MODEL",)

    def run(self, model1, model2, multiplier: float) -> tuple:
        return (merging.merge_subtract(model1, model2, multiplier),)


@node("ModelMergeAdd", category=MERGING, function="merge")
class ModelMergeAdd:
    model1 = Input("MODEL")
    model2 = Input("MODEL")
    RETURNS = ("MODEL",)

    def run(self, model1, model2) -> tuple:
        return (merging.merge_add(model1, model2),)


@node("CLIPMergeSimple", category=MERGING, function="merge")
class CLIPMergeSimple:
    clip1 = Input("CLIP")
    clip2 = Input("CLIP")
    ratio = _ratio()
    RETURNS = ("CLIP",)

    def run(self, clip1, clip2, ratio: float) -> tuple:
        return (merging.merge_weighted(clip1, clip2, ratio, is_clip=True),)


@node("CLIPMergeSubtract", category=MERGING, function="merge")
class CLIPMergeSubtract:
    clip1 = Input("CLIP")
    clip2 = Input("CLIP")
    multiplier = _multiplier()
    RETURNS = ("CLIP",)

    def run(self, clip1, clip2, multiplier: float) -> tuple:
        return (merging.merge_subtract(clip1, clip2, multiplier, is_clip=True),)


@node("CLIPMergeAdd", category=MERGING, function="merge")
class CLIPMergeAdd:
    clip1 = Input("CLIP")
    clip2 = Input("CLIP")
    RETURNS = ("CLIP",)

    def run(self, clip1, clip2) -> tuple:
        return (merging.merge_add(clip1, clip2, is_clip=True),)


# --- per-architecture block merges ----------------------------------------------------------------------

def _unet_prefixes(inputs: int, middle: int, outputs: int, dot: str) -> list[str]:
    return (["time_embed.", "label_emb."] + [f"input_blocks.{i}{dot}" for i in range(inputs)]
            + [f"middle_block.{i}{dot}" for i in range(middle)] + [f"output_blocks.{i}{dot}" for i in range(outputs)]
            + ["out."])


def _mmdit_prefixes(depth: int) -> list[str]:
    return (["pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder."]
            + [f"joint_blocks.{i}." for i in range(depth)] + ["final_layer."])


def _run_block_merge(self, model1, model2, **ratios: float) -> tuple:
    return (merging.merge_by_blocks(model1, model2, ratios),)


def _block_merge_node(name: str, prefixes: list[str]) -> type:
    """A ModelMergeBlocks node whose inputs are `prefixes` (not identifiers: declared through type())."""
    body = {"model1": Input("MODEL"), "model2": Input("MODEL"), **{p: _ratio() for p in prefixes},
            "RETURNS": ("MODEL",), "run": _run_block_merge, "__module__": __name__}
    return node(name, category=f"{MERGING}/model_specific", function="merge")(type(name, (), body))


ModelMergeSD1 = _block_merge_node("ModelMergeSD1", _unet_prefixes(12, 3, 12, "."))
ModelMergeSD2 = _block_merge_node("ModelMergeSD2", _unet_prefixes(12, 3, 12, "."))
ModelMergeSDXL = _block_merge_node("ModelMergeSDXL", _unet_prefixes(9, 3, 9, ""))
ModelMergeSD3_2B = _block_merge_node("ModelMergeSD3_2B", _mmdit_prefixes(24))
ModelMergeSD35_Large = _block_merge_node("ModelMergeSD35_Large", _mmdit_prefixes(38))


def _blocks(head: list[str], block: str, count: int, tail: list[str]) -> list[str]:
    """`head`, then `block.format(i)` for i < count, then `tail`: the block list of a transformer."""
    return [*head, *(block.format(i) for i in range(count)), *tail]


# The key prefixes of the other families ComfyUI lists (the architectures' own parameter names).
ModelMergeFlux1 = _block_merge_node("ModelMergeFlux1", _blocks(
    ["img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in."], "double_blocks.{}.", 19,
    [f"single_blocks.{i}." for i in range(38)] + ["final_layer."]))
ModelMergeAuraflow = _block_merge_node("ModelMergeAuraflow", _blocks(
    ["init_x_linear.", "positional_encoding", "cond_seq_linear.", "register_tokens", "t_embedder."],
    "double_layers.{}.", 4, [f"single_layers.{i}." for i in range(32)] + ["modF.", "final_linear."]))
ModelMergeLTXV = _block_merge_node("ModelMergeLTXV", _blocks(
    ["patchify_proj.", "adaln_single.", "caption_projection."], "transformer_blocks.{}.", 28,
    ["scale_shift_table", "proj_out."]))
ModelMergeMochiPreview = _block_merge_node("ModelMergeMochiPreview", _blocks(
    ["pos_frequencies.", "t_embedder.", "t5_y_embedder.", "t5_yproj."], "blocks.{}.", 48, ["final_layer."]))
ModelMergeQwenImage = _block_merge_node("ModelMergeQwenImage", _blocks(
    ["pos_embeds.", "img_in.", "txt_norm.", "txt_in.", "time_text_embed."], "transformer_blocks.{}.", 60,
    ["proj_out."]))
ModelMergeWAN2_1 = _block_merge_node("ModelMergeWAN2_1", _blocks(
    ["patch_embedding.", "time_embedding.", "time_projection.", "text_embedding.", "img_emb."], "blocks.{}.", 40,
    ["head."]))
_COSMOS_HEAD = ["pos_embedder.", "extra_pos_embedder.", "x_embedder.", "t_embedder.", "affline_norm."]
ModelMergeCosmos7B = _block_merge_node("ModelMergeCosmos7B", _blocks(_COSMOS_HEAD, "blocks.block{}.", 28,
                                                                     ["final_layer."]))
ModelMergeCosmos14B = _block_merge_node("ModelMergeCosmos14B", _blocks(_COSMOS_HEAD, "blocks.block{}.", 36,
                                                                       ["final_layer."]))
_PREDICT2_HEAD = ["pos_embedder.", "x_embedder.", "t_embedder.", "t_embedding_norm."]
ModelMergeCosmosPredict2_2B = _block_merge_node("ModelMergeCosmosPredict2_2B", _blocks(
    _PREDICT2_HEAD, "blocks.{}.", 28, ["final_layer."]))
ModelMergeCosmosPredict2_14B = _block_merge_node("ModelMergeCosmosPredict2_14B", _blocks(
    _PREDICT2_HEAD, "blocks.{}.", 36, ["final_layer."]))


# --- savers -----------------------------------------------------------------------------------------------

@node("ModelSave", category=MERGING, output_node=True, function="save")
class ModelSave:
    model = Input("MODEL")
    filename_prefix = String("diffusion_models/ComfyUI")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, model, filename_prefix: str, prompt=None, extra_pnginfo=None) -> dict:
        target = services.folders().save_target(filename_prefix)
        saving_parts.save_model(target.path("safetensors"), model, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {}


@node("VAESave", category=MERGING, output_node=True, function="save")
class VAESave:
    vae = Input("VAE")
    filename_prefix = String("vae/ComfyUI_vae")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, vae, filename_prefix: str, prompt=None, extra_pnginfo=None) -> dict:
        target = services.folders().save_target(filename_prefix)
        saving_parts.save_vae(target.path("safetensors"), vae, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {}


@node("CLIPSave", category=MERGING, output_node=True, function="save")
class CLIPSave:
    clip = Input("CLIP")
    filename_prefix = String("clip/ComfyUI")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, clip, filename_prefix: str, prompt=None, extra_pnginfo=None) -> dict:
        folders = services.folders()
        saving_parts.save_clip(lambda tower: folders.save_target(f"{filename_prefix}_{tower}").path("safetensors"),
                               clip, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {}


@node("LoraSave", category="_for_testing", display_name="Extract and Save Lora", output_node=True,
      experimental=True, function="execute")
class LoraSave:
    filename_prefix = String("loras/ComfyUI_extracted_lora", multiline=False)
    rank = Int(8, min=1, max=4096, step=1)
    lora_type = Combo(lora_extract.LORA_TYPES)
    bias_diff = Boolean(True)
    model_diff = optional(Input("MODEL", tooltip="The ModelMergeSubtract output to turn into a LoRA."))
    text_encoder_diff = optional(Input("CLIP", tooltip="The CLIPMergeSubtract output to turn into a LoRA."))
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, filename_prefix: str, rank: int, lora_type: str, bias_diff: bool, model_diff=None,
            text_encoder_diff=None, prompt=None, extra_pnginfo=None) -> dict:
        target = services.folders().save_target(filename_prefix)
        lora_extract.extract_lora_file(target.path("safetensors"), model_diff, text_encoder_diff, rank=rank,
                                       lora_type=lora_type, bias_diff=bias_diff)
        return {}
