#!/usr/bin/env bash
# Make local stand-ins for the base images of the examples in Containerfiles/,
# whose real registries cannot be reached from the test machines:
#   - a Go toolset: a Debian 12 root file system with golang-go (mmdebstrap);
#   - a bootc base: a 2 MB image with Debian's static busybox as its shell.
# Each image is made only when it does not exist yet.
set -euo pipefail

go_image=${GO_TOOLSET_IMAGE:-localhost/bootc-build-standins/go-toolset:bookworm}
base_image=${BOOTC_BASE_IMAGE:-localhost/bootc-build-standins/bootc-base:latest}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if podman image exists "$go_image"; then
    echo "stand-in $go_image exists"
else
    echo "making $go_image with mmdebstrap (about a minute)"
    mmdebstrap --quiet --variant=minbase --include=golang-go,ca-certificates \
        bookworm "$work/rootfs.tar" </dev/null
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        "$work/rootfs.tar" "$go_image"
    rm -f "$work/rootfs.tar"
fi

if podman image exists "$base_image"; then
    echo "stand-in $base_image exists"
else
    echo "making $base_image from busybox-static"
    cp "$(command -v busybox)" "$work/busybox"
    cat >"$work/Containerfile" <<'CONTAINERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL containers.bootc=1
CMD ["/bin/sh"]
CONTAINERFILE
    podman build --quiet --tag "$base_image" "$work"
fi
