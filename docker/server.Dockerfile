# syntax=docker/dockerfile:1
# The gRPC front end: maskfarm[server] only, no torch, no GPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The source is mounted for the install only, so it leaves no layer behind.
RUN --mount=type=bind,source=.,target=/src,rw \
    pip install "/src[server]"

RUN useradd --system --no-create-home maskfarm
USER maskfarm

EXPOSE 50051
CMD ["maskfarm", "server"]
