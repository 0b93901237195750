-- CLI test: the training loop's events as Lua callbacks. A callback returning false stops the run
-- there (no error); one raising an error stops it with the error at its own line. Calls no
-- saefw.config{}, so a --key value on the command line is refused after the script ran.
local saefw = require "saefw"
local function run(t)
  local source = saefw.synthetic { d_in = 16, n_features = 32, p_active = 0.05, seed = 1 }
  local opts = { sae = saefw.sae { d_in = 16, d_sae = 64, seed = 1 }, source = source, batch_size = 64,
                 steps = 100, seed = 1, optimizer = saefw.plugin("adam", { lr = 1e-3 }), log_every = 10,
                 eval_every = 50, run_dir = false, progress = false }
  for k, v in pairs(t) do opts[k] = v end
  return saefw.train(opts)
end
local r = run { on_log = function(m) return m.step < 20 end }
print(string.format("stopped by on_log: steps_done=%d", r.steps_done))
local evals = 0
local ok, err = pcall(run, { on_eval = function(m)
  evals = evals + 1
  if m.step == 50 then error("boom at step 50") end
end })
print(string.format("on_eval error: ok=%s evals=%d %s", tostring(ok), evals, tostring(err)))
