# mammogate node image. Build: docker build -t mammogate .
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends dcmtk \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY mammogate ./mammogate
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/mammogate mammogate \
 && mkdir -p /var/lib/mammogate && chown mammogate /var/lib/mammogate
USER mammogate
ENV MAMMOGATE_NODE__DATA_DIR=/var/lib/mammogate
# Inside a container the ports must listen beyond loopback; list the calling AE titles in the
# configuration (or set MAMMOGATE_DICOM__ACCEPT_ANY_CALLING_AE=true on purpose).
ENV MAMMOGATE_DICOM__BIND=0.0.0.0 MAMMOGATE_WEB__BIND=0.0.0.0
EXPOSE 11112 8080
VOLUME ["/var/lib/mammogate"]
ENTRYPOINT ["mammogate"]
CMD ["serve"]
