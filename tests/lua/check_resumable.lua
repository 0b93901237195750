-- Disk-full test: the newest intact checkpoint of --run_dir loads and can be resumed from.
local saefw = require "saefw"
local cfg = saefw.config { run_dir = "" }
local dir = assert(saefw.find_resumable(cfg.run_dir))
local sae = saefw.load_sae(dir)
print(string.format("intact checkpoint %s: d_in %d, d_sae %d", dir, sae.d_in, sae.d_sae))
