"""maskfarm's ComfyUI nodes: copy or link this folder into ``ComfyUI/custom_nodes``.

ComfyUI imports this file as a package and reads the two mappings below. The node needs
the maskfarm client (``pip install`` it into ComfyUI's Python; see README.md here).
"""

from .apply_clipseg import ApplyCLIPSegOnFarm

NODE_CLASS_MAPPINGS = {"ApplyCLIPSegMaskfarm": ApplyCLIPSegOnFarm}
NODE_DISPLAY_NAME_MAPPINGS = {"ApplyCLIPSegMaskfarm": "ApplyCLIPSeg (maskfarm)"}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
