-- A run whose on_log callback returns false after step 20 of 100: it must end there properly (final
-- evaluation, final checkpoint, end event naming the callback). Used by test_run_dir.
local saefw = require "saefw"
local cfg = saefw.config { run_dir = "" }
local buffer = saefw.buffer { source = saefw.synthetic { d_in = 16, n_features = 32, p_active = 0.05, seed = 3 },
                              size = 64 * 8, batch_size = 64, seed = 3 }
local sae = saefw.sae { d_in = 16, d_sae = 64, l1_coeff = 1e-3, seed = 3 }
local r = saefw.train {
  sae = sae, buffer = buffer, steps = 100, seed = 3, optimizer = saefw.plugin("adam", { lr = 1e-3 }),
  log_every = 10, eval_every = 50, run_dir = cfg.run_dir, progress = false,
  on_log = function(m) return m.step < 20 end,
}
print(string.format("stopped_by %s steps_done %d loss %.6g checkpoint %s", tostring(r.stopped_by), r.steps_done,
                    r.loss, r.checkpoint))
