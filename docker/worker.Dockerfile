# A generation worker: Celery, the model, CUDA torch and the bundled weights.
#
#   docker build -f docker/worker.Dockerfile -t reel-worker .
#   docker run --gpus 1 -e REEL_REDIS_URL=redis://host:6379/0 -e REEL_DEVICE=cuda reel-worker
#
# PyPI's Linux torch wheel carries its own CUDA runtime (the nvidia-* wheels), so
# a slim Python base is enough: the host needs only the NVIDIA driver and the
# container toolkit. For a CPU-only image set TORCH_INDEX_URL to PyTorch's CPU
# wheel index (https://download.pytorch.org/whl/cpu): about 1.5 GB smaller.

FROM python:3.12-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin reel

WORKDIR /opt/reel

# torch first and pinned (the largest layer, rebuilt only when the version changes).
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"

# The rest of the dependencies, read from pyproject.toml (base list + the `model` extra).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['model']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "torch==${TORCH_VERSION}" \
 && rm /tmp/requirements.txt

# Code, then weights. The install is editable so that the model resolves
# `reel-shapes-v1` to /opt/reel/weights/reel-shapes-v1 next to the package.
# To serve other weights without rebuilding, mount a directory and point
# REEL_MODEL at it (compose.yaml shows how).
COPY app/ app/
COPY worker/ worker/
COPY model/ model/
RUN pip install --no-deps -e .
COPY weights/ weights/

RUN mkdir -p /data && chown reel:reel /data
USER reel
ENV REEL_DATA_DIR=/data

# On SIGTERM the running job stops at its next sampler step and goes back to the
# queue; allow a step's time (`stop_grace_period`, terminationGracePeriodSeconds).
CMD ["reel", "worker", "--queues", "generate", "--concurrency", "1", "--pool", "solo"]
