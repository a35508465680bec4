# syntax=docker/dockerfile:1
# The gRPC front end: maskfarm[server] only, no torch, no GPU. Needs BuildKit (`docker
# compose` v2, or DOCKER_BUILDKIT=1) for the source mount below.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The source is mounted for the install only, so it leaves no layer behind; the versions
# are the tested ones (constraints.txt).
RUN --mount=type=bind,source=.,target=/src,rw \
    pip install -c /src/constraints.txt "/src[server]"

# uid 10001, as in the worker image: Kubernetes' runAsNonRoot needs a numeric user
# (deploy/k8s/).
RUN useradd --system --uid 10001 --no-create-home maskfarm
USER maskfarm

EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["maskfarm", "health"]
CMD ["maskfarm", "server"]
