# Training image (registry.example.com/mlops/digits-trainer) for GPU runners (CML, Argo Workflows):
# the CUDA build of the pinned torch plus the pipeline's packages (dvc, mlflow, ...), pinned by
# constraints.txt. The repo checkout is mounted at /workspace and the job runs `dvc repro` there.
# Build from the repo root:
#   docker build -f ml/training.Dockerfile -t registry.example.com/mlops/digits-trainer:TAG .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# git: dvc and the register stage read the commit; make: the pipeline's entry points.
# Unpinned on purpose: Debian's stable archive only carries the current, patched version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/trainer
COPY pyproject.toml constraints.txt ./
COPY ml ./ml
COPY scripts ./scripts
# constraints.txt pins PyPI's torch build for Linux, which carries its CUDA libraries (the nvidia-*
# and cuda-* pins): the same lock serves CPU machines and GPU nodes (NVIDIA driver >= 580 for CUDA 13).
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --uid 10001 --create-home trainer
USER 10001:10001
WORKDIR /workspace
ENTRYPOINT ["dvc"]
CMD ["repro"]
