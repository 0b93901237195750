#!/usr/bin/env bash
# Install saefw into a temporary prefix, then: the installed binary runs a script from another
# folder, and a plugin built out of tree with only the installed header and pkg-config file loads.
set -euo pipefail
build="$1"; src="$2"; tmp="$3"
rm -rf "$tmp" && mkdir -p "$tmp"
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
bin="$tmp/prefix/bin/saefw"
pcdir=$(dirname "$(find "$tmp/prefix" -name saefw-plugin.pc | head -n 1)")
test -f "$tmp/prefix/include/saefw/plugin.h" || { echo "plugin.h not installed"; exit 1; }
cflags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags saefw-plugin)
libs=$(PKG_CONFIG_PATH="$pcdir" pkg-config --libs saefw-plugin)
# Only the installed header: the source tree's include folder is not on the path.
# -Wmissing-prototypes: the header declares the entry point, so a plugin needs no prototype of its own.
cc $cflags -O2 -Wall -Wextra -Wno-unused-parameter -Wmissing-prototypes -Werror -o "$tmp/step_counter.so" "$src/tests/oot/step_counter.c" $libs
cd "$tmp"
"$bin" version
"$bin" plugins | grep -q "adam" || { echo "installed plugins not found"; exit 1; }
SAEFW_PLUGIN_PATH="$tmp" "$bin" plugins | grep -q "step_counter" || { echo "out-of-tree plugin not listed"; exit 1; }
out=$("$bin" run "$src/tests/oot/use_counter.lua" --plugin "$tmp/step_counter.so" --steps 50 2>&1)
echo "$out" | tail -n 1
echo "$out" | grep -q "^oot_steps=100$" || { echo "out-of-tree plugin did not run: $out"; exit 1; }
echo "install smoke test passed"
