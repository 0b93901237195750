-- Several SAEs on one buffer, small: run by tests/multi.cmake's checks (test_multi.sh) with
-- --names a,b (both) or --names b (one alone), killed and resumed, and with bad input.
local saefw = require "saefw"
local cfg = saefw.config { steps = 60, run_dir = "", names = "a,b", checkpoint_every = 7, eval_every = 10,
                           batch_size = 64, buffer_mult = 8, seed = 5, bad = "" }
local model = saefw.model("tiny-1l")
local tokens = saefw.tokens(saefw.data_dir() .. "/models/tiny-1l/tokens.npy", { seq_len = 32, seed = cfg.seed, bos = 256 })
local buffer = saefw.buffer { model = model, tokens = tokens, site = "post", layer = 0, size = cfg.batch_size * cfg.buffer_mult,
                              batch_size = cfg.batch_size, model_batch_size = 4, seed = cfg.seed }
-- Each SAE by name: its size, coefficient and plugins do not depend on which others train with it.
local specs = {
  a = { d_sae = 512, l1_coeff = 1e-3, resample = false },
  b = { d_sae = 1024, l1_coeff = 3e-3, resample = true },
  c = { d_sae = 256, l1_coeff = 1e-3, resample = false, d_in = 32 },
}
local saes = {}
for name in cfg.names:gmatch("[^,]+") do
  local s = specs[name]
  local plugins = {}
  if s.resample then plugins[1] = saefw.plugin("anthropic_resample", { every = 25, samples = 256, chunk = 128 }) end
  saes[#saes + 1] = { name = name, plugins = plugins, optimizer = saefw.plugin("adam", { lr = 1e-3 }),
                      sae = saefw.sae { d_in = s.d_in or buffer.d_act, d_sae = s.d_sae, l1_coeff = s.l1_coeff, seed = cfg.seed } }
end
local t = {
  saes = saes, buffer = buffer, steps = cfg.steps, seed = cfg.seed, log_every = 1, eval_every = cfg.eval_every,
  checkpoint_every = cfg.checkpoint_every, recons_batches = 1, freq_batches = 1, run_dir = cfg.run_dir, config = cfg,
  progress = false,
}
if cfg.bad == "empty" then t.saes = {} end
if cfg.bad == "same_name" then saes[2].name = saes[1].name end
if cfg.bad == "both" then t.sae = saes[1].sae end
if cfg.bad == "field" then saes[1].lr = 1e-3 end
local r = saefw.train(t)
for _, x in ipairs(r) do
  print(string.format("done %s: step %d loss %.9g recons %.6f", x.name, x.steps_done, x.loss, x.recons_score))
end
