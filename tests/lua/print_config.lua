-- CLI test: prints the config after command-line overrides, one key per line.
local saefw = require "saefw"
local cfg = saefw.config { lr = 1e-4, batch_size = 4096, name = "base", remove_rare_dir = false }
for _, k in ipairs { "lr", "batch_size", "name", "remove_rare_dir" } do
  print(string.format("%s=%s (%s)", k, tostring(cfg[k]), math.type(cfg[k]) or type(cfg[k])))
end
