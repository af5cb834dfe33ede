#!/usr/bin/env bash
# Install the headless browser the UI test drives: Debian's chromium and chromium-driver.
# Idempotent and non-interactive (works with no stdin, CI=true). Nothing is downloaded
# outside the distribution's package manager.
set -euo pipefail

PACKAGES=(chromium chromium-driver)

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install_browser: chromium and chromedriver are already installed" \
        "($(command -v chromium), $(command -v chromedriver))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; install Chromium and its driver" \
        "(Debian/Ubuntu: ${PACKAGES[*]}) so that 'chromium' and 'chromedriver' are on PATH" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install_browser: root is needed to install ${PACKAGES[*]}; run as root:" >&2
    echo "    apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser: installing ${PACKAGES[*]} with apt-get"
"${SUDO[@]}" apt-get update -qq </dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" </dev/null

for tool in chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install_browser: '$tool' is still not on PATH after installing ${PACKAGES[*]}" >&2
        exit 1
    }
done
echo "install_browser: $(chromium --version 2>/dev/null || echo chromium); $(chromedriver --version)"
