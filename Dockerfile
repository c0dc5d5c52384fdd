# ordersync on Debian bookworm-slim, with the same Debian packages as a
# developer machine (scripts/install-deps lists them).
FROM debian:bookworm-slim AS build
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
      build-essential cmake pkg-config libuv1-dev node-llhttp libpq-dev \
      libcurl4-openssl-dev libjansson-dev libssl-dev libcmocka-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY lib lib
COPY services services
COPY migrations migrations
COPY schema schema
COPY tests tests
COPY tools tools
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j"$(nproc)" --target ordersync downstream

FROM debian:bookworm-slim
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
      libuv1 libpq5 libcurl4 libjansson4 libssl3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home ordersync
COPY --from=build /src/build/bin/ordersync /src/build/bin/downstream /usr/local/bin/
USER ordersync
ENV ORDERSYNC_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/ordersync"]
CMD ["serve"]
