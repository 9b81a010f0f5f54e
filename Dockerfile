# One image for every long-running part of the controller: the Celery worker of a submit node
# (`celery -A tasks worker -Q <schedd>`), beat, Flower, the exporter (`htdask exporter`) and the DaskCluster
# operator (`htdask operator`).  compose/docker-compose.yml and deploy/k8s/*.yaml use it.
#
# What it runs is the wheel, installed as a site installs it (`pip wheel --no-deps .`, then `pip install` of
# that wheel with its pinned runtime dependencies from pyproject.toml): no checkout on PYTHONPATH, no test
# tooling; tests/test_wheel.py runs the quick start from the same wheel.
#
#   docker build -t htdask:latest .
#   docker build --build-arg INSTALL_HTCONDOR=0 -t htdask-operator:latest .   # operator/beat/Flower only
#
# The worker needs the HTCondor client programs (condor_submit, condor_q, condor_rm, ...): they come
# from the HTCondor project's Debian repository (the HTCondor series matching the htcondor Python
# bindings pinned in requirements.txt).  Their configuration is the submit host's /etc/condor,
# mounted read-only at run time.
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY . ./
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim-bookworm

ARG INSTALL_HTCONDOR=1
ARG HTCONDOR_SERIES=25.x

RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    if [ "$INSTALL_HTCONDOR" = "1" ]; then \
        curl -fsSL "https://research.cs.wisc.edu/htcondor/repo/keys/HTCondor-${HTCONDOR_SERIES}-Key" \
            | gpg --dearmor -o /usr/share/keyrings/htcondor.gpg; \
        echo "deb [arch=amd64 signed-by=/usr/share/keyrings/htcondor.gpg] https://research.cs.wisc.edu/htcondor/repo/debian/${HTCONDOR_SERIES} bookworm main" \
            > /etc/apt/sources.list.d/htcondor.list; \
        apt-get update; \
        apt-get install -y --no-install-recommends condor; \
    fi; \
    apt-get purge -y --auto-remove gnupg; \
    rm -rf /var/lib/apt/lists/*

COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/htdask-*.whl && rm -rf /tmp/dist

# An empty working directory: `celery -A tasks` imports the installed package, never a copy of the sources.
WORKDIR /var/lib/htdask
ENV PYTHONUNBUFFERED=1 \
    CONDOR_CONFIG=/etc/condor/condor_config

# The worker switches to each cluster's owner to submit, so the image runs as root by default;
# the operator's Deployment runs it as an unprivileged user (deploy/k8s/operator.yaml).
CMD ["celery", "-A", "tasks", "worker", "-Q", "local", "--loglevel", "INFO"]
