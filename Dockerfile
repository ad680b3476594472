# loracle-server image. Build:  docker build -t loracle .
#                    (or here:  podman build --isolation chroot -t loracle .)
# Run:    docker run -p 50051:50051 -p 9464:9464 -v loracle-adapters:/var/lib/loracle/adapters loracle
# Every dependency comes from Debian packages via deploy/install-deps.sh, as on a developer machine.
# .git is not in the build context: pass the commit for loracle_build_info with
#   --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD)
#
# CUDA variant (README "GPU"): the same image on a CUDA LibTorch distribution instead of Debian's
# CPU one, built with Debian's CUDA 11.8 toolkit (non-free) to match it:
#   docker build -t loracle:cuda \
#     --build-arg LIBTORCH_URL=https://download.pytorch.org/libtorch/cu118/libtorch-cxx11-abi-shared-with-deps-2.1.2%2Bcu118.zip .
#   docker run --gpus all ... loracle:cuda --device=cuda --dtype=bfloat16
# (or put the zip in the build context and pass LIBTORCH_URL=file:///src/<name>.zip). The default
# (LIBTORCH_URL empty) is the CPU image, built exactly as without this argument.

FROM debian:bookworm AS build
ARG LIBTORCH_URL=
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN deploy/install-deps.sh ${LIBTORCH_URL:+--no-torch} \
 && mkdir -p /opt/libtorch/lib \
 && if [ -n "$LIBTORCH_URL" ]; then \
      sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' \
        /etc/apt/sources.list.d/debian.sources \
      && apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           nvidia-cuda-toolkit unzip curl; \
    fi \
 && rm -rf /var/lib/apt/lists/*
COPY . .
ARG GIT_COMMIT=unknown
RUN if [ -n "$LIBTORCH_URL" ]; then \
      curl -fsSL "$LIBTORCH_URL" -o /tmp/libtorch.zip && unzip -q /tmp/libtorch.zip -d /opt \
      && rm /tmp/libtorch.zip; \
    fi \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLORACLE_BUILD_TESTS=OFF \
    -DLORACLE_GIT_COMMIT="${GIT_COMMIT}" ${LIBTORCH_URL:+-DCMAKE_PREFIX_PATH=/opt/libtorch} \
 && cmake --build /build -j"$(nproc)" \
 && cmake --install /build --prefix /opt/loracle --strip

FROM debian:bookworm-slim
ARG LIBTORCH_URL=
COPY deploy/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --runtime ${LIBTORCH_URL:+--no-torch} \
 && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /opt/loracle/bin/ /usr/local/bin/
# The built-in pretrained model (server/model/builtin), where the binary looks for it.
COPY --from=build /opt/loracle/share/loracle/ /usr/local/share/loracle/
# Empty in the CPU image; the CUDA variant's LibTorch and the CUDA libraries it bundles.
COPY --from=build /opt/libtorch/lib/ /opt/libtorch/lib/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
RUN useradd --system --uid 10001 --home-dir /var/lib/loracle --create-home loracle \
 && mkdir -p /var/lib/loracle/adapters /var/cache/loracle \
 && chown -R loracle /var/lib/loracle /var/cache/loracle
USER 10001
# The default home of the jobs (the adapters have their volume below).
ENV LORACLE_CACHE_DIR=/var/cache/loracle
VOLUME ["/var/lib/loracle/adapters"]
EXPOSE 50051 9464
ENTRYPOINT ["loracle-server", "--adapters_dir=/var/lib/loracle/adapters"]
