# Training image (registry.example.com/mlops/digits-trainer) for GPU runners (CML, Argo Workflows):
# the CUDA build of the pinned torch plus the pipeline's packages (dvc, mlflow, ...), pinned by
# constraints.txt. The repo checkout is mounted at /workspace and the job runs `dvc repro` there.
# Build from the repo root:
#   docker build -f ml/training.Dockerfile -t registry.example.com/mlops/digits-trainer:TAG .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
# torch is the one package not taken from constraints.txt (which pins the CPU wheel, +cpu):
# the same version, built for CUDA, from PyTorch's wheel index.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
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
RUN grep -v '^torch==' constraints.txt > constraints-gpu.txt \
    && pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" \
    && pip install --no-cache-dir -c constraints-gpu.txt .
RUN useradd --uid 10001 --create-home trainer
USER 10001:10001
WORKDIR /workspace
ENTRYPOINT ["dvc"]
CMD ["repro"]
