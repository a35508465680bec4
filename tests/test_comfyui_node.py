"""The ComfyUI node (clients/comfyui): its contract with ComfyUI, and its masks from a live
service against the node's own computation done locally.

ComfyUI cannot be installed here, so the folder is loaded the way ComfyUI loads a custom
node (its ``__init__.py`` as a package) and called the way ComfyUI calls it: keyword
arguments named by INPUT_TYPES, an IMAGE batch B x H x W x 3 float32 in [0, 1]. Where a
test needs ComfyUI's progress bar or Cancel button, a small ``comfy`` package with those two
functions is put on the path. The service is real: ``maskfarm server``, a private Redis and
one ``maskfarm worker`` on the tiny synthetic model.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

from maskfarm.client.client import Client
from tests.reference import reference_logits, reference_masks, reference_rgb_uint8
from tests.services import ServerProcess, free_port, maskfarm_server, maskfarm_worker

NODE_FOLDER = Path(__file__).resolve().parent.parent / "clients" / "comfyui"
SEED_INPUTS = {  # ApplyCLIPSeg+'s widgets, as ComfyUI_essentials declares them
    "prompt": ("STRING", {"multiline": False, "default": ""}),
    "threshold": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.05}),
    "smooth": ("INT", {"default": 9, "min": 0, "max": 32, "step": 1}),
    "dilate": ("INT", {"default": 0, "min": -32, "max": 32, "step": 1}),
    "blur": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1}),
}
PARAMS = dict(threshold=0.5, smooth=9, dilate=2, blur=4)
PROMPT = "red car"


def load_like_comfyui(folder: Path = NODE_FOLDER, name: str = "maskfarm-comfyui") -> ModuleType:
    """Imports a custom-node folder as ComfyUI does: its ``__init__.py`` as a package
    named after the folder (here the name README.md gives the link)."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")  # ComfyUI's very call
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nodes() -> ModuleType:
    return load_like_comfyui()


@pytest.fixture(scope="module")
def service(redis_url: str, tiny_model_dir: Path) -> Iterator[ServerProcess]:
    with maskfarm_server(redis_url, "mfcomfy") as server, maskfarm_worker(server, tiny_model_dir, "comfyui-worker"):
        yield server


def image_batch(frames: int = 4, height: int = 45, width: int = 64) -> torch.Tensor:
    """A ComfyUI IMAGE: B x H x W x 3 float32 in [0, 1], smooth random blobs."""
    coarse = torch.from_numpy(np.random.default_rng(7).random((frames, 3, 6, 8)).astype(np.float32))
    batch = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    return batch.permute(0, 2, 3, 1).contiguous()


def run_node(nodes: ModuleType, image: torch.Tensor, **inputs) -> torch.Tensor:
    """Calls the node as ComfyUI does: an instance, FUNCTION, keyword arguments."""
    node_class = nodes.NODE_CLASS_MAPPINGS["ApplyCLIPSegMaskfarm"]
    inputs = {"prompt": PROMPT, "negatives": "", **PARAMS, **inputs}
    (masks,) = getattr(node_class(), node_class.FUNCTION)(image=image, **inputs)
    return masks


def node_masks_locally(model_dir: Path, image: torch.Tensor, prompt: str) -> torch.Tensor:
    """What ApplyCLIPSeg+ gives for ``image`` and ``prompt`` in this process
    (tests/reference.py): its 8-bit conversion, the processor per frame, the plain model,
    its post-processing; unclamped."""
    processor = CLIPSegProcessor.from_pretrained(model_dir)
    model = CLIPSegForImageSegmentation.from_pretrained(model_dir).eval()
    logits = []
    for frame in image:
        pixel_values = processor(images=[reference_rgb_uint8(frame)], return_tensors="pt")["pixel_values"]
        logits.append(reference_logits(model, processor, pixel_values, prompt))
    return reference_masks(torch.stack(logits), tuple(image.shape[1:3]), **PARAMS)


def test_the_node_declares_the_seed_nodes_inputs_and_a_mask_output(nodes):
    node_class = nodes.NODE_CLASS_MAPPINGS["ApplyCLIPSegMaskfarm"]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS == {"ApplyCLIPSegMaskfarm": "ApplyCLIPSeg (maskfarm)"}
    required = node_class.INPUT_TYPES()["required"]
    assert required["image"] == ("IMAGE",)
    assert {name: required[name] for name in SEED_INPUTS} == SEED_INPUTS
    assert required["negatives"] == (
        "STRING",
        {"multiline": False, "default": "", "tooltip": required["negatives"][1]["tooltip"]},
    )
    assert required["target"][0] == required["token_file"][0] == "STRING"
    assert required["priority"] == (["normal", "high", "low"], {"default": "normal"})
    assert node_class.RETURN_TYPES == ("MASK",)
    assert node_class.CATEGORY == "maskfarm"
    execute = getattr(node_class, node_class.FUNCTION)
    assert list(inspect.signature(execute).parameters)[1:] == list(required)  # ComfyUI passes them by name


def test_the_node_loads_without_comfyui_torch_or_the_client_imported():
    """Outside ComfyUI (no ``comfy`` package) the folder imports, and importing it loads
    neither torch nor the maskfarm client: they are needed only when the node runs."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        assert importlib.util.find_spec("comfy") is None
        spec = importlib.util.spec_from_file_location(
            "maskfarm_comfyui", {str(NODE_FOLDER / "__init__.py")!r})
        nodes = sys.modules["maskfarm_comfyui"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(nodes)
        assert not {{"torch", "maskfarm.client.client"}} & set(sys.modules), "imported at load time"
        print(sorted(nodes.NODE_CLASS_MAPPINGS))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['ApplyCLIPSegMaskfarm']"


def test_a_folder_named_maskfarm_says_to_rename_it():
    """ComfyUI would load a folder called ``maskfarm`` as the module ``maskfarm``, hiding the
    client package: the node refuses to load, saying so, instead of failing when it runs."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("maskfarm", {str(NODE_FOLDER / "__init__.py")!r})
        sys.modules["maskfarm"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["maskfarm"])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImportError: this custom-node folder is named 'maskfarm'" in result.stderr
    assert "rename it (custom_nodes/maskfarm-comfyui, say)" in result.stderr


def test_a_four_frame_batch_gives_the_nodes_masks(nodes, service, tiny_model_dir):
    image = image_batch()
    masks = run_node(nodes, image, target=service.target)

    assert masks.shape == (4, 45, 64) and masks.dtype == torch.float32
    assert float(masks.min()) >= 0.0 and float(masks.max()) <= 1.0
    expected = node_masks_locally(tiny_model_dir, image, PROMPT).clamp(0, 1)  # maskfarm clamps the bicubic overshoot
    difference = (masks - expected).abs()
    assert float(difference.max()) <= 1 / 255
    assert float((difference <= 1e-4).float().mean()) >= 0.9999  # float32 masks: no 8-bit rounding on the way
    assert 0.05 < float(masks.mean()) < 0.95 and bool(((masks > 0) & (masks < 1)).any()), "a trivial mask proves little"


def test_negatives_are_taken_out_of_the_prompts_mask(nodes, service, tiny_model_dir):
    image = image_batch()
    masks = run_node(nodes, image, target=service.target, negatives="a tree, , sky ")  # blanks ignored

    positive, *negatives = (
        node_masks_locally(tiny_model_dir, image, prompt).clamp(0, 1) for prompt in (PROMPT, "a tree", "sky")
    )
    expected = (positive - torch.stack(negatives).amax(dim=0)).clamp(0, 1)
    assert float((masks - expected).abs().max()) <= 1 / 255
    assert float((positive - expected).abs().max()) > 0.5, "the negatives should take something out"


def test_an_unreachable_service_is_a_plain_node_error(nodes):
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(nodes.apply_clipseg.MaskfarmNodeError, match=f"cannot reach the maskfarm service at {target}"):
        run_node(nodes, image_batch(frames=1), target=target)


@pytest.mark.parametrize(
    "inputs,message",
    [
        (dict(prompt="  "), "prompt: empty"),
        (dict(token_file="/nonexistent/maskfarm-token"), "token_file: cannot read /nonexistent/maskfarm-token"),
        (dict(token_file="{tmp}/fifo"), "token_file: cannot read .*/fifo: not a regular file"),
        (dict(token_file="{tmp}/blank"), "token_file: .*/blank is empty"),
    ],
)
@pytest.mark.timeout(120)  # were the FIFO opened blocking, it would hang: fail well before the suite's 600 s
def test_bad_inputs_are_node_errors_naming_the_input(nodes, inputs, message, tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opened for reading, a FIFO without a writer would block
    (tmp_path / "blank").write_text(" \n")
    inputs = {name: value.format(tmp=tmp_path) for name, value in inputs.items()}
    with pytest.raises(nodes.apply_clipseg.MaskfarmNodeError, match=message):
        run_node(nodes, image_batch(frames=1), target=f"127.0.0.1:{free_port()}", **inputs)


def test_an_image_that_is_not_a_batch_is_a_node_error(nodes):
    with pytest.raises(nodes.apply_clipseg.MaskfarmNodeError, match=r"image: expected a batch B x H x W x C"):
        run_node(nodes, image_batch(frames=1)[0], target=f"127.0.0.1:{free_port()}")


FAKE_COMFY = {
    "__init__.py": "",
    "utils.py": """
        updates = []

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                updates.append((value, total))
    """,
    "model_management.py": """
        interrupted = False

        class InterruptProcessingException(Exception):
            pass

        def processing_interrupted():
            return interrupted

        def throw_exception_if_processing_interrupted():
            global interrupted
            if interrupted:
                interrupted = False
                raise InterruptProcessingException()
    """,
}


@pytest.fixture
def comfy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """ComfyUI's ``comfy`` package, reduced to the progress bar and the interrupt flag the
    node uses (same names and signatures), importable for this test only."""
    package = tmp_path / "comfy"
    package.mkdir()
    for name, source in FAKE_COMFY.items():
        (package / name).write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("comfy", "comfy.utils", "comfy.model_management"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import comfy.model_management
    import comfy.utils

    yield comfy
    for name in ("comfy", "comfy.utils", "comfy.model_management"):
        sys.modules.pop(name, None)


def test_inside_comfyui_the_progress_bar_follows_the_frames(nodes, service, comfy):
    run_node(nodes, image_batch(), target=service.target)
    assert comfy.utils.updates == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_comfyuis_cancel_cancels_the_job_on_the_farm(nodes, redis_url, comfy, tmp_path):
    """Through a server with auth on, so the token file is seen to reach it too."""
    token = "comfyui-test-token-0123456789"
    (tmp_path / "tokens").write_text(f"{token} artist\n")
    (tmp_path / "token").write_text(f"{token}\n")
    (tmp_path / "stranger").write_text("a-token-the-server-does-not-know\n")
    # No worker: the job stays queued (and, were it never cancelled, fails as expired
    # within the queue TTL, so a broken cancel fails this test instead of hanging it).
    flags = ("--queue-ttl", "30", "--auth-tokens", str(tmp_path / "tokens"))
    with maskfarm_server(redis_url, "mfcomfy-idle", *flags) as idle:
        with pytest.raises(nodes.apply_clipseg.MaskfarmNodeError, match="UNAUTHENTICATED"):
            run_node(nodes, image_batch(frames=2), target=idle.target, token_file=str(tmp_path / "stranger"))
        comfy.model_management.interrupted = True  # the user pressed Cancel
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run_node(nodes, image_batch(frames=2), target=idle.target, token_file=str(tmp_path / "token"))
        with Client(idle.target, token=token) as client:
            (job,) = list(client.jobs(labels={"source": "comfyui"}))
            assert job.state.value == "CANCELLED"
