# syntax=docker/dockerfile:1
#
# manager-operator container image, built FROM scratch: nothing is pulled, so the same recipe
# works offline (buildah, `make image`) and in a registry pipeline (docker buildx, kaniko).
#
# The build context is not the repository but the folder that `hack/image.sh context` prepares
# (by default target/image/context), holding only `rootfs/`:
#
#   rootfs/usr/local/bin/manager-operator    the release binary, linked statically against
#                                            glibc (`-C target-feature=+crt-static`), so the
#                                            image needs no libc; DNS (`files`, `dns`) is built
#                                            into glibc >= 2.34 and needs no NSS modules
#   rootfs/etc/passwd, rootfs/etc/group      root and the non-root user nonroot = 65532:65532
#   rootfs/etc/nsswitch.conf                 `hosts: files dns`
#   rootfs/etc/ssl/certs/ca-certificates.crt public CA roots, for hooks served under a public
#                                            CA (the API server's CA comes from the projected
#                                            service-account token volume)
#   rootfs/tmp                               mode 1777; the chart mounts an emptyDir over it
#
# Local, offline:      make image        (= hack/image.sh build: context, buildah bud, archive,
#                                         then `--version` run in the image as user 65532)
# Registry pipeline:   hack/image.sh context && docker buildx build -f Dockerfile \
#                        --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#                        -t ghcr.io/manager-operator/manager-operator:0.1.0 --push target/image/context

FROM scratch

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="manager-operator" \
      org.opencontainers.image.description="Leader-elected controller managers declared as ManagerConfig resources; every startup failure surfaced as a Condition, an Event and a metric." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/manager-operator/manager-operator" \
      org.opencontainers.image.url="https://github.com/manager-operator/manager-operator" \
      org.opencontainers.image.documentation="https://github.com/manager-operator/manager-operator/tree/main/charts/manager-operator" \
      org.opencontainers.image.vendor="manager-operator" \
      org.opencontainers.image.base.name="scratch"

COPY rootfs/ /

# Numeric, so that the kubelet can verify `runAsNonRoot: true` without reading /etc/passwd.
USER 65532:65532
# webhook (HTTPS), metrics, health probes: the defaults of `manager-operator run`.
EXPOSE 9443 8080 8081
ENTRYPOINT ["/usr/local/bin/manager-operator"]
CMD ["run"]
