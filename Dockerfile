# The bridge on a GPU host. PyPI's torch wheel carries its CUDA libraries; the host needs
# only the NVIDIA driver and the container toolkit.
FROM python:3.12-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HOME=/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install .
EXPOSE 8000
ENTRYPOINT ["bridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
