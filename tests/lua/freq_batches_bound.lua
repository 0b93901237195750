-- test_stop: an evaluation count past its bound is refused, naming the key, before the run starts.
local saefw = require "saefw"
local source = saefw.synthetic { d_in = 16, n_features = 32, p_active = 0.05, seed = 1 }
saefw.train {
  sae = saefw.sae { d_in = 16, d_sae = 64, seed = 1 }, source = source, batch_size = 64, steps = 10,
  optimizer = saefw.plugin("adam", { lr = 1e-3 }), freq_batches = 1000000, run_dir = false,
}
