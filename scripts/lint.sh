#!/usr/bin/env bash
# House rules the compiler does not enforce (STYLE.md): no unbounded string
# functions anywhere in our C code. Exits non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
if grep -rnE '\b(strcpy|strcat|sprintf|vsprintf|gets|strncpy|strtok)[[:space:]]*\(' \
	src tools tests/tools tests/unit fuzz | grep -vE '\b(snprintf|vsnprintf)\b'; then
	echo "lint: use snprintf / memcpy with explicit bounds instead" >&2
	exit 1
fi
echo "lint: ok"
