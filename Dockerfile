# One image for auth, backend and worker; compose picks the command.
#
# PYTHON_IMAGE is the base (CPython 3.11 with venv and pip). The default needs a
# registry; `deploy/offline/build.sh` builds a stand-in from Debian's packages and
# passes it here, with PIP_OPTIONS pointing pip at wheels prepared on the host.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG PIP_OPTIONS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# build/wheel[s] matches nothing unless the offline build prepared wheels
COPY pyproject.toml ./
COPY build/wheel[s] /wheels/
# the dependencies first, in a layer of their own: a change of the code alone
# reuses it
RUN python -m venv /opt/venv \
 && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
 && /opt/venv/bin/pip install ${PIP_OPTIONS} -r requirements.txt
COPY README.md ./
COPY auth ./auth
COPY backend ./backend
COPY agents ./agents
COPY bridge ./bridge
COPY servicekit ./servicekit
COPY e2e ./e2e
COPY benchmarks ./benchmarks
# the runtime only: the services' packages in a venv, without pip, the end-to-end
# suite or the benchmarks
RUN /opt/venv/bin/pip install ${PIP_OPTIONS} --no-deps . \
 && site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && rm -rf "$site/e2e" "$site/benchmarks" \
 && /opt/venv/bin/pip uninstall -y pip setuptools wheel > /dev/null \
 && /opt/venv/bin/python -m compileall -q "$site" > /dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && mkdir -p /data/keys && chown app /data/keys
WORKDIR /tmp
USER 10001
EXPOSE 8000 8001
STOPSIGNAL SIGTERM
CMD ["python", "-m", "backend"]
