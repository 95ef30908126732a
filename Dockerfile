# One image for every service of docker-compose.yml: Ray nodes, the training job, the Serve app.
FROM python:3.11-slim
WORKDIR /app
# A C++ compiler builds the fused decoding step (models/fused_decode.py) on first use.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md constraints.txt ./
COPY world world
COPY models models
COPY algos algos
COPY actors actors
COPY pipelines pipelines
COPY serve serve
COPY conf conf
COPY cli cli
COPY bench bench
COPY experiments experiments
# The versions the suite last passed with; torch is left to pyproject.toml (the image's build: CPU or CUDA).
RUN pip install --no-cache-dir -c constraints.txt -e . psycopg2-binary
# Compile the fused decoding step into the image (a node with another CPU class compiles its own on first use).
RUN python -c "from models.fused_decode import load; assert load() is not None"
ENV MLFLOW_DISABLE_TELEMETRY=true
