#!/usr/bin/env bash
# Make a local Debian bookworm base image with python3 + venv, for hosts that reach no image registry (this
# workplace, air-gapped clusters): mmdebstrap from the host's Debian mirror, then `docker import`.
#
#   scripts/make-base-image.sh [IMAGE]        # default refine-af-base:bookworm; skips when IMAGE already exists
#   MIRROR=http://mirror/debian scripts/make-base-image.sh
#
# Then: scripts/build-image.sh cpu --base-image refine-af-base:bookworm
# The image builds have no network, so python3-venv (with ensurepip's bundled pip) must be in the tarball already.
set -euo pipefail
IMAGE=${1:-refine-af-base:bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE exists"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
if [ -z "${MIRROR:-}" ]; then  # the mirror this host's apt already uses
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$MIRROR" ] || { echo "no Debian mirror found in /etc/apt: set MIRROR" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Docs, man pages and locales are dead weight in an image.
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$tmp/base.tar" "$MIRROR"
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$IMAGE" >/dev/null
echo "$IMAGE imported from $MIRROR"
