# One image for the web server and the workers.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 CURATE_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
# The default build has PyPI's Linux torch, which carries CUDA (the GPU workers' image). A CPU-only
# image (docker compose --profile cpu) is built with TORCH_INDEX=https://download.pytorch.org/whl/cpu:
# the same torch release without the CUDA libraries, a far smaller image.
ARG TORCH_INDEX=
RUN if [ -n "$TORCH_INDEX" ]; then pip install --index-url "$TORCH_INDEX" -c constraints.txt torch torchvision; fi \
    && pip install -c constraints.txt .
EXPOSE 8000
CMD ["curate", "serve", "--host", "0.0.0.0", "--no-worker"]
