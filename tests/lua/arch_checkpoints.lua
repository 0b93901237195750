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

-- Bad values are one-line errors at saefw.sae{}, before any training.
local function refused(t, want)
  local ok, e = pcall(saefw.sae, t)
  assert(not ok and tostring(e):find(want, 1, true), "saefw.sae: wanted an error with '" .. want .. "', got " .. tostring(e))
end
refused({ d_in = 8, d_sae = 16, arch = "topk", k = 17 }, "k must be from 1 to d_sae (16), got 17")
refused({ d_in = 8, d_sae = 16, arch = "batchtopk", k = 0 }, "k must be from 1 to d_sae (16), got 0")
refused({ d_in = 8, d_sae = 16, arch = "jumprelu", threshold = -0.1 }, "threshold must be a number > 0, got -0.1")
refused({ d_in = 8, d_sae = 16, arch = "jumprelu", bandwidth = 0 }, "bandwidth must be a number > 0, got 0")
refused({ d_in = 8, d_sae = 16, arch = "topk", bandwidth = 0.1 }, "field 'bandwidth' does not apply to arch = \"topk\"")
refused({ d_in = 8, d_sae = 16, k = 4 }, "field 'k' does not apply to arch = \"relu\"")
refused({ d_in = 8, d_sae = 16, arch = "gated", enc_dtype = "bf16" }, "field 'enc_dtype' does not apply")
refused({ d_in = 8, d_sae = 16, arch = "sparse" }, "arch must be relu, topk, batchtopk, jumprelu or gated (got 'sparse')")

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
