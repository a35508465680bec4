# syntax=docker/dockerfile:1
# A GPU worker: torch built for CUDA comes with the base image (Python 3.11).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/root/.cache/huggingface

# The constraint keeps the base image's CUDA torch: pip must not swap in another build.
RUN --mount=type=bind,source=.,target=/src,rw \
    python -c "import torch; print('torch==' + torch.__version__)" >/tmp/base-torch.txt \
 && pip install -c /tmp/base-torch.txt "/src[worker]"

CMD ["maskfarm", "worker"]
