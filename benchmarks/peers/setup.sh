#!/usr/bin/env bash
# Separate virtual environments for the peer engines of benchmarks/peers/peers.py, so that no
# peer's pins (another torch, an older transformers) ever touch the project's .venv.
#
#   bash benchmarks/peers/setup.sh muvera      # muvera-python (numpy only): small, quick
#   bash benchmarks/peers/setup.sh fast-plaid  # pins torch==2.11.0: PyPI's build pulls the
#                                              # CUDA libraries, several GB of downloads
#   bash benchmarks/peers/setup.sh pylate      # pins transformers<=5.3, fast-plaid<=1.4.6
#                                              # (torch 2.11 again), sentence-transformers
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"

make_venv() {  # make_venv NAME PACKAGE...
    local venv="$here/.venv-$1"; shift
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "$@"
    echo "$venv"
}

case "${1:-}" in
    muvera) make_venv muvera "muvera-python==0.2.0" "numpy>=1.26" ;;
    fast-plaid) make_venv fast-plaid "fast-plaid==1.7.0.2110" "numpy>=1.26" ;;
    # voyager 2.2's add_items takes only a float32 ndarray; pylate 1.6.0 passes a list.
    pylate) make_venv pylate "pylate==1.6.0" "voyager==2.1.0" "numpy>=1.26" ;;
    *) echo "usage: $0 muvera|fast-plaid|pylate" >&2; exit 2 ;;
esac
