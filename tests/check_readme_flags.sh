#!/usr/bin/env bash
# Every flag loracle-server has (its --helpfull, the flags of server/main.cc) appears, with its
# default, in the README's "Server flags" tables.
#   tests/check_readme_flags.sh BUILD/loracle-server
set -euo pipefail
server="$1"
readme="$(cd "$(dirname "$0")/.." && pwd)/README.md"
section="$(awk '/^## Server flags/{on=1} /^## Security/{on=0} on' "$readme")"
help="$("$server" --helpfull 2>&1 || true)"  # --helpfull exits 1
flags="$(awk '/Flags from .*server\/main\.cc:/{on=1; next} /^  Flags from /{on=0} on' <<<"$help" |
  { grep -oE '^ +--[a-z0-9_]+ ' || true; } | tr -d ' -' | sort -u)"
[[ -n "$flags" ]] || { echo "no flags found in $server --helpfull"; exit 1; }
missing=0 n=0
for f in $flags; do
  n=$((n + 1))
  if ! grep -qE "^\| [^|]*\`--$f\`" <<<"$section"; then
    echo "README.md, Server flags: --$f is missing"
    missing=$((missing + 1))
  fi
done
echo "$((n - missing)) passed, $missing failed"
((missing == 0))
