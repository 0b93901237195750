-- Uses the out-of-tree plugin given on the command line for a short synthetic run.
local saefw = require "saefw"
local cfg = saefw.config { plugin = "", steps = 50 }
local source = saefw.synthetic { d_in = 8, n_features = 16, p_active = 0.1, seed = 2 }
local r = saefw.train {
  sae = saefw.sae { d_in = 8, d_sae = 32 }, source = source, batch_size = 32, steps = cfg.steps,
  optimizer = saefw.plugin("sgd", { lr = 1e-2 }), plugins = { saefw.plugin(cfg.plugin, { scale = 2 }) },
  run_dir = false, progress = false,
}
print("oot_steps=" .. string.format("%d", r.oot_steps))
