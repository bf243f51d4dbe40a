FROM python:3.11-slim
# git: repositories and deploys; openssh-client: Ansible over SSH to real servers. PostgreSQL needs no system
# library (asyncpg and psycopg's binary wheels bring their own).
RUN apt-get update && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e .
ENV ORCH_DATA_DIR=/data
EXPOSE 8000
CMD ["orchestrator", "api", "--host", "0.0.0.0", "--port", "8000"]
