#!/usr/bin/env bash
# Fails when a translation unit of a torch-free target includes a torch, ATen or c10 header,
# directly or through other headers. Reads the compiler's own dependency records of the build:
# `ninja -t deps` for the Ninja generator, the .o.d depfiles for Makefiles.
#   tests/check_torch_free.sh BUILD_DIR TARGET...
set -euo pipefail
build="$1"
shift
(($# > 0)) || { echo "check_torch_free: no targets given" >&2; exit 2; }

deps_of_target() {  # prints "object: header" lines for every object file of target $1
  local dir="CMakeFiles/$1.dir/"  # under the build root or a folder of it
  if [[ -f "$build/build.ninja" ]]; then
    ninja -C "$build" -t deps | awk -v dir="$dir" '
      /^[^ \t].*: #deps/ { obj = $1; sub(/:$/, "", obj); keep = index(obj, dir) == 1 || index(obj, "/" dir) > 0; if (keep) print obj ": (object)"; next }
      keep && NF { print obj ": " $1 }'
  else
    find "$build" -path "*/$dir*" -name '*.o.d' -print0 | while IFS= read -r -d '' d; do
      echo "$d: (object)"
      tr -s ' \\' '\n' < "$d" | grep -v ':$' | sed "s|^|$d: |"
    done
  fi
}

status=0
for target in "$@"; do
  deps="$(deps_of_target "$target")"
  objects=$(grep -c ': (object)$' <<<"$deps" || true)
  if ((objects == 0)); then
    echo "FAIL $target: no compiled objects found under $build (not built yet?)"
    status=1
    continue
  fi
  bad=$(grep -E ': .*/(torch|ATen|c10)/' <<<"$deps" || true)
  if [[ -n "$bad" ]]; then
    echo "FAIL $target includes torch headers:"
    # the first offending header of each object
    awk -F': ' '!seen[$1]++ { print "  " $1 " -> " $2 }' <<<"$bad"
    status=1
  else
    echo "ok   $target: $objects translation units, no torch/ATen/c10 header"
  fi
done
exit $status
