# STAND-IN for heartexlabs/label-studio:1.23.2, built by scripts/docker_ci.sh because Docker Hub is not reachable on
# our CI machines. docker/docker-compose.yml keeps the official image; tests/docker/compose.label-studio-standin.yml
# swaps in this one (label-studio.image only) for CI. Same package and version as the official image
# (`label-studio==1.23.2` from PyPI), on the python stand-in base; laid out like the official image where the
# compose file depends on it: data in /label-studio/data (LABEL_STUDIO_BASE_DATA_DIR), uid 1001, port 8080,
# python3 for the healthcheck. Differences: no nginx/uwsgi (LS's own `label-studio start` server), SQLite only.
ARG PYTHON_IMAGE=sam2-ci/python-standin:3.11-slim-bookworm
# hadolint ignore=DL3006
FROM ${PYTHON_IMAGE}
ARG LS_VERSION=1.23.2
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1
RUN pip install "label-studio==${LS_VERSION}"
RUN groupadd --gid 1001 labelstudio \
 && useradd --uid 1001 --gid 1001 --home-dir /label-studio --shell /usr/sbin/nologin labelstudio \
 && mkdir -p /label-studio/data /label-studio/files && chown -R 1001:1001 /label-studio
WORKDIR /label-studio
ENV LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data HOME=/label-studio
LABEL org.opencontainers.image.description="CI STAND-IN for heartexlabs/label-studio:1.23.2 (label-studio==1.23.2 from PyPI on a Debian-made base)"
USER 1001
EXPOSE 8080
CMD ["label-studio", "start", "--internal-host", "0.0.0.0", "--port", "8080", "--no-browser"]
