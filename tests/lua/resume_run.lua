-- Resume test run: a small run with frequent checkpoints, buffer refills and evaluations, on the
-- bundled tiny model (source = "model") or on synthetic data; killed and resumed by test_resume.
local saefw = require "saefw"
local cfg = saefw.config { steps = 120, run_dir = "", source = "model", optimizer = "adam", resample = true,
                           checkpoint_every = 7, eval_every = 10, batch_size = 64, buffer_mult = 8, seed = 5 }
local buffer
if cfg.source == "model" then
  local model = saefw.model("tiny-1l")
  local tokens = saefw.tokens(saefw.data_dir() .. "/models/tiny-1l/tokens.npy", { seq_len = 32, seed = cfg.seed, bos = 256 })
  buffer = saefw.buffer { model = model, tokens = tokens, site = "post", layer = 0, size = cfg.batch_size * cfg.buffer_mult,
                          batch_size = cfg.batch_size, model_batch_size = 4, seed = cfg.seed }
else
  buffer = saefw.buffer { source = saefw.synthetic { d_in = 32, n_features = 64, p_active = 0.05, seed = cfg.seed },
                          size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size, seed = cfg.seed }
end
local sae = saefw.sae { d_in = buffer.d_act, d_sae = buffer.d_act * 4, l1_coeff = 1e-3, seed = cfg.seed }
local plugins = {}
if cfg.resample then
  plugins[1] = saefw.plugin("anthropic_resample", { every = 30, samples = 512, chunk = 128 })
end
local r = saefw.train {
  sae = sae, buffer = buffer, steps = cfg.steps, seed = cfg.seed, plugins = plugins,
  optimizer = saefw.plugin(cfg.optimizer, { lr = 1e-3 }), log_every = 1, eval_every = cfg.eval_every,
  checkpoint_every = cfg.checkpoint_every, recons_batches = 1, freq_batches = 1, run_dir = cfg.run_dir, config = cfg,
  progress = false,
}
print(string.format("done: step %d loss %.9g", r.steps_done, r.loss))
