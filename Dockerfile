# loracle-server image. Build:  docker build -t loracle .
#                    (or here:  podman build --isolation chroot -t loracle .)
# Run:    docker run -p 50051:50051 -p 9464:9464 -v loracle-adapters:/var/lib/loracle/adapters loracle
# Every dependency comes from Debian packages via deploy/install-deps.sh, as on a developer machine.
# .git is not in the build context: pass the commit for loracle_build_info with
#   --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD)

FROM debian:bookworm AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
ARG GIT_COMMIT=unknown
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLORACLE_BUILD_TESTS=OFF \
    -DLORACLE_GIT_COMMIT="${GIT_COMMIT}" \
 && cmake --build /build -j"$(nproc)" \
 && cmake --install /build --prefix /opt/loracle --strip

FROM debian:bookworm-slim
COPY deploy/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /opt/loracle/bin/ /usr/local/bin/
RUN useradd --system --uid 10001 --home-dir /var/lib/loracle --create-home loracle \
 && mkdir -p /var/lib/loracle/adapters /var/cache/loracle \
 && chown -R loracle /var/lib/loracle /var/cache/loracle
USER 10001
# The built-in model is generated here on first start (about 50 MB); mount a volume to keep it.
ENV LORACLE_CACHE_DIR=/var/cache/loracle
VOLUME ["/var/lib/loracle/adapters"]
EXPOSE 50051 9464
ENTRYPOINT ["loracle-server", "--adapters_dir=/var/lib/loracle/adapters"]
