-- Issue 16's architectures end to end, one per call (--arch topk|batchtopk|jumprelu|gated), driven
-- by tests/run_arch_checkpoints.sh: --phase full trains 40 steps on synthetic data, checks the final
-- checkpoint's cfg.json (SAELens's names) and reads it back with saefw.load_sae (same arch, same
-- tensors); --phase kill ends the process abruptly after step 25 (checkpoint 20 holds the training
-- state); --phase resume continues that run folder to step 40, whose final weights the script
-- compares byte for byte with the full run's. Any wrong value is a Lua error.
local saefw = require "saefw"
local cfg = saefw.config { arch = "topk", phase = "full", run_dir = "" }

local opts = {
  topk = { k = 8, k_aux = 16, dead_steps = 5 },
  batchtopk = { k = 8, k_aux = 16, dead_steps = 5 },
  jumprelu = { threshold = 0.05, bandwidth = 0.05, l0_coeff = 1e-3 },
  gated = { l1_coeff = 1e-3 },
}
local saelens = { topk = "topk", batchtopk = "jumprelu", jumprelu = "jumprelu", gated = "gated" }

local t = { d_in = 32, d_sae = 128, arch = cfg.arch, seed = 3 }
for k, v in pairs(assert(opts[cfg.arch], "unknown arch " .. cfg.arch)) do t[k] = v end
local sae = saefw.sae(t)
assert(sae.arch == cfg.arch, "arch " .. tostring(sae.arch))
local r = saefw.train {
  sae = sae, source = saefw.synthetic { d_in = 32, n_features = 64, p_active = 0.05, seed = 4 },
  batch_size = 64, buffer_size = 512, steps = 40, seed = 5,
  optimizer = saefw.plugin("adam", { lr = 1e-3 }), log_every = 1, eval_every = 20, checkpoint_every = 20,
  freq_batches = 1, recons_batches = 0, run_dir = cfg.run_dir, progress = false, config = cfg,
  resume = cfg.phase == "resume" and cfg.run_dir or nil, allow_change = { "phase" },
  on_log = function(m)
    if cfg.phase == "kill" and m.step == 25 then os.exit(0, false) end
    return true
  end,
}
if cfg.phase ~= "full" then
  print(string.format("%s %s: loss %.6f", cfg.arch, cfg.phase, r.loss))
  return
end

local f = assert(io.open(r.checkpoint .. "/cfg.json", "r"))
local text = f:read("a")
f:close()
local function has(key, value)
  assert(text:find('"' .. key .. '":%s*' .. value), cfg.arch .. ": cfg.json lacks " .. key .. " = " .. value)
end
has("architecture", '"' .. saelens[cfg.arch] .. '"')
has("saefw_arch", '"' .. cfg.arch .. '"')
has("apply_b_dec_to_input", cfg.arch == "jumprelu" and "false" or "true")
if cfg.arch == "topk" or cfg.arch == "batchtopk" then has("k", "8") end

local back = saefw.load_sae(r.checkpoint)
assert(back.arch == cfg.arch, cfg.arch .. ": loaded as " .. tostring(back.arch))
for _, name in ipairs(sae.names) do
  local a, b = sae:tensor(name), back:tensor(name)
  assert(#a == #b, name .. ": sizes differ")
  for i = 1, #a do
    -- log_threshold comes back as log(exp(log_threshold)): within float rounding.
    local tol = name == "log_threshold" and 1e-6 * math.abs(a[i]) + 1e-7 or 0
    if not (math.abs(a[i] - b[i]) <= tol) then
      error(string.format("%s %s: element %d differs: %.9g vs %.9g", cfg.arch, name, i, a[i], b[i]))
    end
  end
end
print(string.format("%s: loss %.6f, L0 %.2f; cfg.json and load_sae ok", cfg.arch, r.loss, r.l0))
