# syntax=docker/dockerfile:1

# The base images are build arguments (defaults: the public images users build from), so a
# machine without those registries builds the same stages from local equivalents.
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where the binary comes from: `build` compiles it in the image; `prebuilt` packages the
# target/release/sidecar-injector already built on the host (the test suite's way, offline).
ARG BINARY=build

# Build: dependencies first, in their own layer, so a source change does not rebuild them.
# The exact rustc that scripts/link-order.txt was made with: its symbol names (hashes) are
# that compiler's, and another one would link the code in its default order (more RSS).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
COPY benches ./benches
COPY scripts/link-order.txt ./scripts/
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
COPY deploy/base/config.yaml ./deploy/base/config.yaml
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && strip target/release/sidecar-injector

FROM scratch AS prebuilt
COPY target/release/sidecar-injector /src/target/release/sidecar-injector

# hadolint ignore=DL3006
FROM ${BINARY} AS binary

# Run: distroless (glibc, CA roots, no shell), as the image's non-root user.
FROM ${RUNTIME_IMAGE}
COPY --from=binary /src/target/release/sidecar-injector /usr/local/bin/sidecar-injector
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/sidecar-injector"]
CMD ["serve"]
