# STAND-IN for python:3.11-slim-bookworm, made by scripts/docker_ci.sh because Docker Hub is not reachable on our CI
# machines. Never used by a user: docker/Dockerfile defaults to the official image.
# Base: a `debootstrap --variant=minbase bookworm` tree imported with `docker import` (the same Debian release the
# official image is built from); on top, Debian's python3.11 in a venv on PATH (so `python` and `pip` are what the
# official image has), and this machine's CA bundle: TLS to the package registries from inside a container only
# verifies with it here, so pip and python are pointed at it.
ARG DEBIAN_IMAGE=sam2-ci/debian-standin:bookworm-minbase
# hadolint ignore=DL3006
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv netbase tzdata \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/share/doc/* /usr/share/man/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.description="CI stand-in for python:3.11-slim-bookworm (debootstrap + Debian python3.11)"
CMD ["python3"]
