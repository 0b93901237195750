-- test_stop_refill: counts past their bounds are refused with one line naming the key, before any
-- work starts. --case picks one.
local saefw = require "saefw"
local case = saefw.config { case = "" }.case
if case == "buffer_size" then
  local source = saefw.synthetic { d_in = 2048, n_features = 32, p_active = 0.05, seed = 1 }
  saefw.buffer { source = source, size = 9e15, batch_size = 64 }
elseif case == "model_batch_size" then
  local model = saefw.model "tiny-1l"
  local tokens = saefw.tokens(saefw.data_dir() .. "/models/tiny-1l/tokens.npy", { seq_len = 128 })
  saefw.buffer { model = model, tokens = tokens, site = "post", layer = 0, size = 8192, batch_size = 1024,
                 model_batch_size = 100000 }
elseif case == "reinit_batches" then
  local source = saefw.synthetic { d_in = 16, n_features = 32, p_active = 0.05, seed = 1 }
  saefw.train {
    sae = saefw.sae { d_in = 16, d_sae = 64, seed = 1 }, source = source, batch_size = 64, steps = 10,
    optimizer = saefw.plugin("adam", { lr = 1e-3 }), run_dir = false,
    plugins = { saefw.plugin("reinit_dead", { every = 5, batches = 1e6 }) },
  }
end
