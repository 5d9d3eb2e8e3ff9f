#!/usr/bin/env bash
# Start a throw-away registry on loopback, push the demo image to it with
# bootc-build, print the digest the registry serves, then stop the registry.
set -euo pipefail

image=$1
bootc_build=$2

work=$(mktemp -d)
registry_pid=""
cleanup() {
    if [ -n "$registry_pid" ]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/config.yml" <<CONFIG
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/data
http:
  addr: 127.0.0.1:$port
CONFIG
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break
    sleep 0.1
done

destination="127.0.0.1:$port/bootc-build-demo/hello:latest"
"$bootc_build" push "$image" "$destination" --no-tls-verify --log-format console \
    --digestfile "$work/digest"
echo "bootc-build reported: $(cat "$work/digest")"
served=$(curl -fsI \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$port/v2/bootc-build-demo/hello/manifests/latest" \
    | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}')
echo "the registry serves:   $served"
[ "$served" = "$(cat "$work/digest")" ]
