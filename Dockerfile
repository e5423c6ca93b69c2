# syntax=docker/dockerfile:1

# Build: dependencies first, in their own layer, so a source change does not rebuild them.
# The exact rustc that scripts/link-order.txt was made with: its symbol names (hashes) are
# that compiler's, and another one would link the code in its default order (more RSS).
FROM rust:1.95.0-slim-bookworm AS build
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
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && strip target/release/sidecar-injector

# Run: distroless (glibc, CA roots, no shell), as the image's non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sidecar-injector /usr/local/bin/sidecar-injector
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/sidecar-injector"]
CMD ["serve"]
