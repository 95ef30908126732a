# One image for every service of docker-compose.yml: Ray nodes, the training job, the Serve app.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY world world
COPY models models
COPY algos algos
COPY actors actors
COPY pipelines pipelines
COPY serve serve
COPY conf conf
COPY cli cli
COPY bench bench
RUN pip install --no-cache-dir -e . psycopg2-binary
ENV MLFLOW_DISABLE_TELEMETRY=true
