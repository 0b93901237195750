-- The seed's remove_rare_dir experiment, end to end: train a baseline SAE (or load one), measure its
-- feature frequencies, compute the rare-feature direction (the normalised mean of the encoder
-- columns of features firing less than 1e-4 of the time), show how the rare features' encoder
-- columns align with it, retrain with every encoder column kept orthogonal to that direction (the
-- remove_rare_dir plugin), and compare the two frequency histograms.
--   saefw run experiments/remove_rare_dir.lua [--baseline CHECKPOINT] [--num_tokens 2e6]
-- On the bundled tiny model (the default) it takes a few minutes on 2 cores.
local saefw = require "saefw"
local analysis = require "saefw.analysis"

local cfg = saefw.config {
  seed = 49, batch_size = 1024, buffer_mult = 64, lr = 1e-3, num_tokens = 1e6, l1_coeff = 1e-3,
  beta1 = 0.9, beta2 = 0.99, dict_mult = 8, seq_len = 128, model_name = "tiny-1l", site = "post",
  layer = 0, data = "", bos = 256, rare_threshold = 1e-4, freq_batches = 20, baseline = "", run_dir = "",
}
local run_dir = cfg.run_dir ~= "" and cfg.run_dir or saefw.default_run_dir()
local data = cfg.data ~= "" and cfg.data or (saefw.data_dir() .. "/models/tiny-1l/tokens.npy")
local model = saefw.model(cfg.model_name)

local function tokens() return saefw.tokens(data, { seq_len = cfg.seq_len, seed = cfg.seed, bos = cfg.bos >= 0 and cfg.bos or nil }) end
local function buffer(toks)
  return saefw.buffer { model = model, tokens = toks, site = cfg.site, layer = cfg.layer,
                        size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size, seed = cfg.seed }
end
local function train(name, plugins)
  local buf = buffer(tokens())
  local sae = saefw.sae { d_in = buf.d_act, d_sae = buf.d_act * cfg.dict_mult, l1_coeff = cfg.l1_coeff, seed = cfg.seed }
  local r = saefw.train {
    sae = sae, buffer = buf, num_tokens = cfg.num_tokens, seed = cfg.seed, plugins = plugins,
    optimizer = saefw.plugin("adam", { lr = cfg.lr, beta1 = cfg.beta1, beta2 = cfg.beta2 }),
    log_every = 200, eval_every = 1000, run_dir = run_dir .. "/" .. name, config = cfg,
  }
  return sae, r
end

local eval_source = saefw.model_source { model = model, tokens = tokens(), site = cfg.site, layer = cfg.layer,
                                         model_batch_size = 16, seed = cfg.seed + 1 }
local function frequencies(sae) return saefw.frequencies(sae, eval_source, cfg.freq_batches, cfg.batch_size) end

-- 1. The baseline.
local base
if cfg.baseline ~= "" then
  base = saefw.load_sae(cfg.baseline)
  print("baseline: loaded " .. cfg.baseline)
else
  print("== 1. training the baseline SAE")
  base = train("baseline", {})
end

-- 2. Its frequencies and the rare direction.
local freqs = frequencies(base)
local stats = analysis.frequency_stats(freqs)
print(string.format("baseline: dead %.4f, below 1e-5 %.4f, below 1e-4 %.4f", stats.dead, stats.below_1e5, stats.below_1e4))
local dir, rare, cos = analysis.rare_direction(base, freqs, cfg.rare_threshold)
if not dir then error("remove_rare_dir: the baseline has no feature below frequency " .. cfg.rare_threshold, 0) end
local mean_cos = 0
for _, c in ipairs(cos) do mean_cos = mean_cos + c end
mean_cos = mean_cos / #cos
print(string.format("== 2. rare direction from %d features below %g; mean cosine of their encoder columns with it %.3f",
                    #rare, cfg.rare_threshold, mean_cos))
local cos_hist = analysis.histogram(cos, -1, 1, 20, "cosine of the rare features' encoder columns with the rare direction")
print(analysis.render_text(cos_hist))
os.execute(string.format("mkdir -p '%s'", run_dir))
local dir_path = run_dir .. "/rare_freq_dir.npy"
saefw.save_tensor(dir_path, dir)
print("direction saved to " .. dir_path)

-- 3. Retrain with every encoder column kept orthogonal to the direction.
print("== 3. retraining with remove_rare_dir")
local sae2, r2 = train("remove_rare_dir", { saefw.plugin("remove_rare_dir", { direction = dir_path }) })
print(string.format("every encoder column orthogonal to the direction: max |d . column| = %.3g", r2.max_abs_dir_dot))

-- 4. Compare the frequency histograms.
local stats2 = analysis.frequency_stats(frequencies(sae2))
print("== 4. frequencies: baseline vs remove_rare_dir")
print(string.format("  %-22s %10s %10s", "", "baseline", "no rare dir"))
for _, k in ipairs { "dead", "below_1e6", "below_1e5", "below_1e4" } do
  print(string.format("  %-22s %10.4f %10.4f", k, stats[k], stats2[k]))
end
print("baseline " .. analysis.render_text(stats.hist, 30))
print("remove_rare_dir " .. analysis.render_text(stats2.hist, 30))
stats.hist.label = "baseline: log10 feature frequency"
stats2.hist.label = "remove_rare_dir: log10 feature frequency"
analysis.write_svg(run_dir .. "/remove_rare_dir.svg", "remove_rare_dir on " .. cfg.model_name, { stats.hist, stats2.hist, cos_hist })
print("histograms: " .. run_dir .. "/remove_rare_dir.svg")
