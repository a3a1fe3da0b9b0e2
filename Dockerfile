# One image for every safeloop service: processor, serving replicas, metrics, dashboard, CLI.
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
# The models folder exists in the image so the named volume mounted there inherits its owner.
RUN useradd --system --home /var/lib/safeloop safeloop && mkdir -p /var/lib/safeloop/models \
 && chown -R safeloop /var/lib/safeloop
USER safeloop
ENTRYPOINT ["safeloop"]
CMD ["--help"]
