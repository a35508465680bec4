# syntax=docker/dockerfile:1
# A GPU worker: torch and torchvision built for CUDA come with the base image. Needs BuildKit
# (`docker compose` v2, or DOCKER_BUILDKIT=1) for the source mount below.
# The base's torch must satisfy what the pinned transformers needs (constraints.txt):
# tests/test_deployment_pins.py reads this FROM line and checks it.
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/maskfarm/.cache/huggingface \
    MASKFARM_HEALTH_FILE=/tmp/maskfarm-worker.alive

# The tested versions (constraints.txt), and the base's own torch and torchvision as pip
# sees them (their distribution versions, not torch.__version__'s local "+cu128" tag),
# so that pip never swaps in another build of either.
RUN --mount=type=bind,source=.,target=/src,rw \
    python -c "from importlib.metadata import version as v; print(*(f'{n}=={v(n)}' for n in ('torch', 'torchvision')), sep='\n')" >/tmp/base-torch.txt \
 && pip install -c /tmp/base-torch.txt -c /src/constraints.txt "/src[worker]" \
 && rm /tmp/base-torch.txt

RUN useradd --create-home --uid 10001 maskfarm \
 && mkdir -p /home/maskfarm/.cache/huggingface && chown -R maskfarm /home/maskfarm
USER maskfarm
WORKDIR /home/maskfarm

# Alive while the worker's heartbeats reach Redis (model loading may take minutes the
# first time: the weights are downloaded).
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 CMD ["maskfarm", "worker-health"]
CMD ["maskfarm", "worker"]
