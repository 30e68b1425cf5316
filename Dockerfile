# syntax=docker/dockerfile:1
#
# mnist-serve: the FastAPI digit-recognition service, also the image of the one-shot `train` job.
#
#   docker build -t mnist-serve .
#   docker run -p 8000:8000 -v models:/models mnist-serve        # serve the newest version in /models
#   docker run -v models:/models -v "$PWD/data/mnist:/data/mnist:ro" mnist-serve mnist-train --no-download
#
# Stage `wheels` builds a wheel of every runtime dependency, then one of the project; the final stage
# installs them into a fresh virtual environment on a clean slim image, so no build context, pip cache
# or test tooling reaches it. Dependencies and project are separate layers: a code change rebuilds only
# the small project layer, not the ~1 GB TensorFlow one. docs/deployment.md has the whole story;
# tests/deploy checks this file against the project and runs its CMD from a venv built by these steps.

FROM python:3.11-slim AS wheels

# The project's extras to install beside its serving dependencies. The default `train` makes the
# full image: the service and `mnist-train`. `--build-arg EXTRAS=` makes the serving image: no
# TensorFlow or Keras (so no integrated-gradients explanations), under a third of the size.
ARG EXTRAS=train
WORKDIR /src
# Dependencies first: this layer is rebuilt only when pyproject.toml changes. The cache mount keeps
# downloaded wheels between builds without putting them in any layer.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import os, tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = [project['optional-dependencies'][name] for name in os.environ['EXTRAS'].split(',') if name]; print(*project['dependencies'], *sum(extras, []), sep='\n')" > requirements.txt \
    && pip wheel --wheel-dir /wheels/deps --requirement requirements.txt
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/app .


FROM python:3.11-slim

LABEL org.opencontainers.image.title="mnist-serve" \
      org.opencontainers.image.description="Handwritten-digit recognition: FastAPI service and Keras training job"

# Matplotlib (the training job's plots) keeps its cache in /tmp: nothing else is writable for the app
# user, as under Kubernetes' readOnlyRootFilesystem with an emptyDir on /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

# A virtual environment without pip: only the project and its runtime dependencies.
# The wheels are bind-mounted from the first stage, so they never land in a layer of this image.
# In the same step (a later one could not shrink this layer), what the wheels ship that nothing runs:
# their own test suites (folders named `tests`, and ONNX's backend test suite with its models) and
# what building extensions against them takes: C headers (`include` folders), static libraries and
# Cython sources. The licences in *.dist-info stay. So does the bytecode: without it, every start
# would compile each module again (docs/deployment.md has the sizes).
RUN --mount=type=bind,from=wheels,source=/wheels/deps,target=/wheels/deps \
    python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-index /wheels/deps/*.whl \
    && find /opt/venv/lib/python3.11/site-packages -name "*.dist-info" -prune -o -type d \
        \( -name tests -o -name include -o -path "*/onnx/backend/test" \) -prune -exec rm -rf {} + \
    && find /opt/venv/lib/python3.11/site-packages -name "*.dist-info" -prune -o -type f \
        \( -name "*.h" -o -name "*.hpp" -o -name "*.a" -o -name "*.pyx" -o -name "*.pxd" \) -exec rm -f {} +
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip --python /opt/venv/bin/python install --no-cache-dir --no-index --find-links=/wheels/deps /wheels/app/*.whl

# An unprivileged user owns the model store and data mount points: a named volume mounted there
# starts with this ownership, so the `train` job (same image, same user) can publish versions into it.
# No writable home: the service writes only to /models (the train job), /data/records (the
# prediction log's SQLite file, when no MNIST_DATABASE_URL names another database) and /tmp.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /models /data/mnist /data/records \
    && chown app:app /models /data/mnist /data/records

# Every MNIST_* variable is a field of app.config.Settings (mnist-train reads MNIST_MODEL_STORE,
# MNIST_MODEL_NAME and MNIST_DATA_DIR too); the rest keep the Settings defaults. Override any of them
# with `docker run -e` or in docker-compose.yml.
ENV PATH="/opt/venv/bin:$PATH" \
    MNIST_HOST=0.0.0.0 \
    MNIST_PORT=8000 \
    MNIST_GRPC_PORT=8081 \
    MNIST_WORKERS=1 \
    MNIST_MODEL_STORE=/models \
    MNIST_DATA_DIR=/data/mnist \
    MNIST_DATABASE_URL=sqlite:////data/records/mnist-serve.db

WORKDIR /home/app
USER 10001:10001
VOLUME ["/models"]
# 8000: HTTP (REST and Open Inference Protocol v2); 8081: the same protocol over gRPC.
EXPOSE 8000 8081

# Liveness, as /healthz answers it; python's urllib, since the slim image has no curl. The start
# period covers loading and warming up the model (and TensorFlow, with integrated gradients).
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MNIST_PORT', '8000'), timeout=4)"]

# mnist-serve runs uvicorn on app.cli:worker_app with every setting from MNIST_*: host, port and
# workers, log level, graceful-shutdown time, and (with several workers) one shared Prometheus
# metrics directory. Exec form: it is PID 1 and gets SIGTERM, then drains in-flight requests.
CMD ["mnist-serve"]
