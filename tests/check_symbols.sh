#!/usr/bin/env bash
# Symbol hygiene: every symbol the saefw binary exports (nm -D --defined-only) and every global the
# engine's static libraries define carries the saefw_ prefix, or is Lua's API (lua_, luaL_,
# luaopen_), main, or the toolchain's (_start, _edata, _end, _init, _fini, data_start, reserved names
# starting with _ and a capital or a second _, copy-relocated libc objects such as stderr@GLIBC_2.2.5). A plain `uerror` or
# `opt_number` would override a Lua C module's function of the same name.
set -euo pipefail
bin="$1"; shift
allowed='^(saefw_|lua_|luaL_|luaopen_|main$|data_start$|_(start|edata|end|init|fini)$|_[A-Z_]|.*@)'
bad=0
check() { # what, then the symbol names
  local what="$1" syms
  syms=$(printf '%s\n' "$2" | grep -Ev "$allowed" | grep -v '^$' || true)
  if [ -n "$syms" ]; then
    echo "$what exports symbols without the saefw_ prefix:"; printf '%s\n' "$syms" | sed 's/^/  /'; bad=1
  fi
}
check "$bin" "$(nm -D --defined-only "$bin" | awk 'NF >= 3 {print $3}')"
for lib in "$@"; do
  check "$lib" "$(nm -g --defined-only "$lib" | awk 'NF >= 3 {print $3}' | sort -u)"
done
n=$(nm -D --defined-only "$bin" | grep -c ' saefw_' || true)
[ "$bad" -eq 0 ] || exit 1
echo "symbols: $bin exports $n saefw_ symbols and nothing unprefixed; $# libraries checked"
