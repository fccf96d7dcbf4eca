# One image for the web server and the workers.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 CURATE_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install -c constraints.txt .
EXPOSE 8000
CMD ["curate", "serve", "--host", "0.0.0.0", "--no-worker"]
