# mammogate node image. Build: docker build -t mammogate .
FROM python:3.11-slim-bookworm
# python-gdcm and pylibjpeg-openjpeg are self-contained wheels: no system libraries needed.
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY mammogate ./mammogate
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/mammogate mammogate \
 && install -d -m 0700 -o mammogate -g mammogate /var/lib/mammogate
USER mammogate
ENV MAMMOGATE_NODE__DATA_DIR=/var/lib/mammogate
# Inside a container the ports must listen beyond loopback; list the calling AE titles in the
# configuration (or set MAMMOGATE_DICOM__ACCEPT_ANY_CALLING_AE=true on purpose).
ENV MAMMOGATE_DICOM__BIND=0.0.0.0 MAMMOGATE_WEB__BIND=0.0.0.0
EXPOSE 11112 8080
HEALTHCHECK --interval=10s --start-period=60s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
VOLUME ["/var/lib/mammogate"]
ENTRYPOINT ["mammogate"]
CMD ["serve"]
