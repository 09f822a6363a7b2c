#!/usr/bin/env bash
# Run HERE (where pip reaches a registry), before the one GPU call: fetch the wheels the GPU image lacks
# into benchmarks/gpu/.whl (git-ignored), check what they require against what the image has, and check
# that the working tree plus the wheels fit the 64 MiB that travels with a call.
#
#   bash benchmarks/gpu/prepare.sh            # transformers 5.24.0 + bitsandbytes 0.50.2 (~54 MiB)
#   bash benchmarks/gpu/prepare.sh --slim     # also strip bitsandbytes' CUDA 11/12 and ROCm/XPU libraries
#                                             # (the GPU has CUDA 13): ~10 MiB instead of ~41 MiB
#
# The GPU image (KINDS.md) has torch 2.11 (CUDA 13), transformers 5.17 (this project needs >= 5.23),
# huggingface-hub 1.33, tokenizers 0.23.2, safetensors 0.8.0, accelerate 1.15, numpy, packaging,
# pyyaml, regex, tqdm, typer; no bitsandbytes, no PyAV. PyAV is not carried: the suite feeds decoded frames.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEST="$HERE/.whl"
LIMIT_MIB=64
SLIM=0
[[ "${1:-}" == "--slim" ]] && SLIM=1
PY="${PYTHON:-python3}"

WHEELS=("transformers==5.24.0" "bitsandbytes==0.50.2")

mkdir -p "$DEST"
# One version of each package: stale wheels of another version would make the install there fail.
for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"
  for old in "$DEST/${name}"-*.whl; do
    [[ -e "$old" ]] || continue
    [[ "$(basename "$old")" == "${name}-${version}-"* ]] || { echo "removing stale $(basename "$old")"; rm -f "$old"; }
  done
done

have() { compgen -G "$DEST/${1}-${2}-*.whl" >/dev/null; }
for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"
  if have "$name" "$version"; then echo "have $name $version"; continue; fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST" "$spec"
done

if [[ $SLIM == 1 ]]; then
  "$PY" "$HERE/slim_wheel.py" "$DEST"/bitsandbytes-*.whl
fi

echo
echo "Requires-Dist of the carried wheels (the image must satisfy these; KINDS.md lists its versions):"
for w in "$DEST"/*.whl; do
  echo "  $(basename "$w"):"
  unzip -p "$w" '*.dist-info/METADATA' | grep -E '^Requires-(Dist|Python)' | grep -v 'extra ==' | sed 's/^/    /'
done
cat <<'EOF'
  Checked against the image: transformers 5.24 needs huggingface-hub>=1.31,<3 (1.33 there),
  tokenizers>=0.23.1,<0.24 (0.23.2), safetensors>=0.8.0 (0.8.0), regex>=2025.10.22 (the image's
  transformers 5.17 requires the same bound and imports there); bitsandbytes needs torch>=2.4 (2.11).
EOF

# What travels: tracked files, untracked files git does not ignore, and the carried wheels.
cd "$ROOT"
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
wheel_bytes=$(stat -c %s "$DEST"/*.whl | awk '{s+=$1} END {print s+0}')
total=$((tree_bytes + wheel_bytes))
awk -v t="$tree_bytes" -v w="$wheel_bytes" -v l="$LIMIT_MIB" 'BEGIN {
  printf "\nworking tree %.1f MiB + wheels %.1f MiB = %.1f MiB of the %d MiB a call carries\n", t/1048576, w/1048576, (t+w)/1048576, l }'
if (( total > LIMIT_MIB * 1048576 )); then
  echo "TOO LARGE: run with --slim, or ignore what need not travel" >&2
  exit 1
fi
git check-ignore -q "$DEST/x.whl" || { echo "benchmarks/gpu/.whl is not git-ignored: add /benchmarks/gpu/.whl/ to .gitignore" >&2; exit 1; }
echo "ok: carry benchmarks/gpu/.whl (see benchmarks/gpu/README.md for the command)"
