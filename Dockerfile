# One image for every safeloop service: processor, serving replicas, metrics, dashboard, CLI.

# The hot path's Avro loops, in C and compiled by mypyc (`make native` outside Docker); the
# compiler stays in this stage. Named safeloop.schemas.* by building them under a `safeloop` folder.
FROM python:3.11-slim AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir mypy==2.4.1 setuptools
WORKDIR /build
COPY __init__.py ./safeloop/
COPY schemas/__init__.py schemas/native_codec.py schemas/flat_avro.c ./safeloop/schemas/
RUN mypyc safeloop/schemas/native_codec.py \
 && gcc -O2 -fPIC -shared -Wall -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
      safeloop/schemas/flat_avro.c \
      -o "safeloop/schemas/flat_avro$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SAFELOOP_STATE_DIR=/var/lib/safeloop
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The locked runtime packages first (hash-checked), so code changes reuse this layer.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
# The repository root is the safeloop package: its __init__.py and py.typed come along.
COPY pyproject.toml README.md __init__.py py.typed ./
COPY schemas ./schemas
COPY infra ./infra
COPY streams ./streams
COPY services ./services
RUN pip install --no-cache-dir --no-deps .
# Beside the installed source, and dated after it: the codec uses a build no older than it.
COPY --from=native /build/safeloop/schemas/*.so /usr/local/lib/python3.11/site-packages/safeloop/schemas/
RUN touch /usr/local/lib/python3.11/site-packages/safeloop/schemas/*.so \
 && python -c "from safeloop.schemas import codec, flat_loop; assert codec.NATIVE and flat_loop.c_loop()"
# The models folder exists in the image so the named volume mounted there inherits its owner.
RUN useradd --system --home /var/lib/safeloop safeloop && mkdir -p /var/lib/safeloop/models \
 && chown -R safeloop /var/lib/safeloop
USER safeloop
ENTRYPOINT ["safeloop"]
CMD ["--help"]
