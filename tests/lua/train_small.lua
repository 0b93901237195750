-- CLI test: a short synthetic run whose length and folder come from the command line.
local saefw = require "saefw"
local cfg = saefw.config { steps = 200, run_dir = "", lr = 1e-3, l1_coeff = 5e-4, checkpoint_every = 0,
                           activations = "", d_in = 16 }
local source
if cfg.activations ~= "" then
  source = saefw.activations { path = cfg.activations, d_in = cfg.d_in }
else
  source = saefw.synthetic { d_in = cfg.d_in, n_features = 32, p_active = 0.05, seed = 1 }
end
local sae = saefw.sae { d_in = cfg.d_in, d_sae = 64, l1_coeff = cfg.l1_coeff, seed = 1 }
local logs = 0
local r = saefw.train {
  sae = sae, source = source, batch_size = 64, buffer_size = 64 * 16, steps = cfg.steps, seed = 1,
  optimizer = saefw.plugin("adam", { lr = cfg.lr }), log_every = 50, eval_every = 100,
  checkpoint_every = cfg.checkpoint_every, run_dir = cfg.run_dir, config = cfg,
  on_log = function(m) logs = logs + 1 end,
}
print(string.format("done steps=%d logs=%d loss=%.4f", r.steps_done, logs, r.loss))
print(string.format("threads=%d final loss %.9g", saefw.threads(), r.loss))
local back, bcfg = saefw.load_sae(r.checkpoint)
print(string.format("reloaded d_in=%d d_sae=%d lr=%s", back.d_in, back.d_sae, tostring(bcfg.lr)))
