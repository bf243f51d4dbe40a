FROM python:3.11-slim
# git: repositories and deploys; openssh-client: Ansible over SSH to real servers; bubblewrap: the sandbox generated
# code runs in (it needs user namespaces: run the container with a seccomp/AppArmor profile that allows them, or set
# ORCH_SANDBOX=none knowingly). PostgreSQL needs no system library (asyncpg and psycopg's wheels bring their own).
RUN apt-get update && apt-get install -y --no-install-recommends git openssh-client bubblewrap \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e . && scripts/compile-bytecode.sh python
ENV ORCH_DATA_DIR=/data ORCH_SANDBOX_PYTHON=/usr/local/bin/python3
EXPOSE 8000
CMD ["orchestrator", "api", "--host", "0.0.0.0", "--port", "8000"]
