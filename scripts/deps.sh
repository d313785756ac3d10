#!/usr/bin/env bash
# Installs the Debian packages Parley needs, when they are missing.
#   scripts/deps.sh build   - to build and run parleyd
#   scripts/deps.sh test    - also to run every test
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail

# libunbound.pc names libevent and nettle (Requires.private) but Debian 12's
# libunbound-dev does not depend on their -dev packages: pkg-config fails without them.
# dns-root-data holds the DNSSEC root trust anchor (the default dns_trust_anchor).
build_pkgs=(gcc pkg-config meson ninja-build libssl-dev libexpat1-dev libsqlite3-dev
	libidn2-dev libicu-dev libyaml-dev libunbound-dev libevent-dev nettle-dev dns-root-data)
test_pkgs=(libcmocka-dev libxml2-dev python3-pytest python3-slixmpp python3-aioxmpp openssl testssl.sh
	clang libclang-rt-14-dev valgrind python3-nbxmpp go-sendxmpp
	unbound ldnsutils prosody lua-unbound ejabberd)

want=("${build_pkgs[@]}")
if [ "${1:-build}" = test ]; then
	want+=("${test_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "Parley needs these Debian packages. Install them with:" >&2
	echo "  sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "Installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Servers installed for the tests (prosody, unbound) must not start as
# system services and take ports: policy-rc.d tells invoke-rc.d not to.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
	apt-get update -q >/dev/null
	apt-get install -y -q "${missing[@]}" >/dev/null
fi

