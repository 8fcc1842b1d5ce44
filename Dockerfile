# One image for web, worker and beat (docker-compose.yml picks the command).
# `--build-arg TF_VARIANT=gpu` builds the GPU worker's image: TensorFlow with
# its CUDA libraries (tensorflow[and-cuda]) instead of the CPU build, with
# every other package at the version the CPU image is tested with.
FROM python:3.11-slim
ARG TF_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt \
 && if [ "$TF_VARIANT" = gpu ]; then \
      pip uninstall --yes tensorflow-cpu \
      && pip install --no-cache-dir "tensorflow[and-cuda]==$(sed -n 's/^tensorflow[-_]cpu==//p' constraints.txt)" \
           -c constraints.txt; \
    elif [ "$TF_VARIANT" != cpu ]; then echo "TF_VARIANT must be cpu or gpu" >&2; exit 1; fi

COPY . .
RUN DJANGO_SECRET_KEY=collectstatic-only STATIC_ROOT=/app/static python manage.py collectstatic --noinput --verbosity 0 \
 && useradd --system --uid 1000 --home /app app \
 && mkdir -p /data/media && chown app /data/media

USER app
ENV STATIC_ROOT=/app/static MEDIA_ROOT=/data/media
EXPOSE 8000
CMD ["gunicorn", "webapp.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120", "--access-logfile", "-"]
