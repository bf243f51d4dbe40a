FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e .
ENV ORCH_DATA_DIR=/data
EXPOSE 8000
CMD ["orchestrator", "api", "--host", "0.0.0.0", "--port", "8000"]
