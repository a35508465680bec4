"""maskfarm's ComfyUI nodes: copy or link this folder into ``ComfyUI/custom_nodes``,
under any name but ``maskfarm`` (the client package's own).

ComfyUI imports this file as a package and reads the two mappings below. The node needs
the maskfarm client (``pip install`` it into ComfyUI's Python; see README.md here).
"""

if __name__ == "maskfarm":  # ComfyUI names a custom node's module after its folder
    raise ImportError(
        "this custom-node folder is named 'maskfarm', which hides the maskfarm client package "
        "from ComfyUI's Python: rename it (custom_nodes/maskfarm-comfyui, say) and restart ComfyUI"
    )

from .apply_clipseg import ApplyCLIPSegOnFarm  # noqa: E402

NODE_CLASS_MAPPINGS = {"ApplyCLIPSegMaskfarm": ApplyCLIPSegOnFarm}
NODE_DISPLAY_NAME_MAPPINGS = {"ApplyCLIPSegMaskfarm": "ApplyCLIPSeg (maskfarm)"}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
