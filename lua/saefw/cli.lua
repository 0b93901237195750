-- Subcommands of the saefw binary written in Lua: `saefw analyze CHECKPOINT [--key value ...]`.
local saefw = require "saefw"
local analysis = require "saefw.analysis"

local M = {}

local function fail(msg) error("saefw analyze: " .. msg, 0) end

-- The activations a checkpoint was trained on, from the options or from its cfg.json.
local function source_for(cfg, o, d_in)
  if o.activations then
    return saefw.activations { path = o.activations, d_in = d_in }, "activations " .. o.activations
  end
  local model_name = o.model or cfg.model_name
  if model_name and model_name ~= "" then
    local data = o.data or (cfg.data ~= "" and cfg.data) or nil
    if not data and model_name == "tiny-1l" then data = saefw.data_dir() .. "/models/tiny-1l/tokens.npy" end
    if not data then fail("the checkpoint was trained on " .. model_name .. "; give its tokens with --data FILE") end
    local hook = o.site or cfg.hook_name or cfg.site
    if not hook or hook == "" then fail("the checkpoint names no hook; give --site NAME [--layer L]") end
    local model = saefw.model(model_name)
    local tokens = saefw.tokens(data, { seq_len = tonumber(o.seq_len) or cfg.context_size or cfg.seq_len or 128,
                                        seed = tonumber(o.seed) or 1 })
    -- A full hook name carries its layer; a short one takes --layer or the config's.
    local layer = tonumber(o.layer) or (not hook:match("^blocks%.") and (cfg.layer or 0)) or nil
    local src = saefw.model_source { model = model, tokens = tokens, site = hook, layer = layer,
                                     model_batch_size = cfg.model_batch_size or 32, seed = tonumber(o.seed) or 1 }
    return src, string.format("%s at %s on %s", model_name, saefw.hook_name(hook, layer), data)
  end
  if cfg.n_features and cfg.p_active then
    return saefw.synthetic { d_in = d_in, n_features = cfg.n_features, p_active = cfg.p_active,
                             max_magnitude = cfg.max_magnitude or 1.0, seed = cfg.data_seed or 0 },
           "the synthetic source of its config"
  end
  fail("cannot tell which activations the checkpoint was trained on; give --activations FILE, or --model NAME --data TOKENS")
end

local OPTIONS = { batches = 1, batch_size = 1, activations = 1, model = 1, data = 1, site = 1, layer = 1, seq_len = 1,
                  svg = 1, threshold = 1, seed = 1 }

--- saefw analyze CHECKPOINT: frequencies, histograms (terminal + SVG), dead/rare fractions, rare direction.
function M.analyze(args)
  local path = args[1]
  if not path then fail("usage: saefw analyze CHECKPOINT [--batches N] [--activations FILE | --model NAME --data TOKENS] [--svg PATH]") end
  local o = {}
  for k, v in pairs(args.options or {}) do
    if not OPTIONS[k] then
      local names = {}
      for n in pairs(OPTIONS) do names[#names + 1] = n end
      table.sort(names)
      fail(string.format("unknown option --%s (valid: %s)", k, table.concat(names, ", ")))
    end
    o[k] = v
  end
  local sae, cfg, where = saefw.load_sae(path)
  local src, what = source_for(cfg, o, sae.d_in)
  local batches = tonumber(o.batches) or 5
  local batch = tonumber(o.batch_size) or cfg.batch_size or 4096
  if not batches or batches < 1 or not batch or batch < 1 then fail("--batches and --batch_size must be positive numbers") end
  local threshold = tonumber(o.threshold) or 1e-4
  print(string.format("SAE %s: %s, d_in %d, d_sae %d; activations from %s", path,
                      cfg.architecture == "transcoder" and "transcoder" or sae.arch, sae.d_in, sae.d_sae, what))
  local freqs = saefw.frequencies(sae, src, math.floor(batches), math.floor(batch))
  local st = analysis.frequency_stats(freqs)
  -- Each frequency is the fraction of tokens a feature fires on, so their sum is the mean L0.
  local l0 = 0
  for i = 1, #freqs do l0 = l0 + freqs[i] end
  print(string.format("mean L0 %.4f (active features per token, the sum of the frequencies)", l0))
  print(string.format("dead %.4f (%d of %d), below 1e-6 %.4f, below 1e-5 %.4f, below 1e-4 %.4f",
                      st.dead, st.dead_count, st.n, st.below_1e6, st.below_1e5, st.below_1e4))
  print(analysis.render_text(st.hist))
  local hists = { st.hist }
  local dir, rare, cos = analysis.rare_direction(sae, freqs, threshold)
  if dir then
    local h = analysis.histogram(cos, -1, 1, 20,
                                 string.format("cosine of the %d rare features' encoder columns with their mean direction", #rare))
    print(analysis.render_text(h))
    hists[#hists + 1] = h
  else
    print(string.format("no live feature below frequency %g: no rare direction", threshold))
  end
  local svg = o.svg
  if not svg and where ~= path then
    -- From the Hub: beside the command, not inside the cache's snapshot.
    svg = (path:match("([^/]+)/*$") or "sae"):gsub("%.pth?$", "") .. ".freq_hist.svg"
  elseif not svg then
    local dir_ok = io.open(path .. "/cfg.json", "r")
    if dir_ok then dir_ok:close(); svg = path .. "/freq_hist.svg" else svg = path .. ".freq_hist.svg" end
  end
  analysis.write_svg(svg, "Feature frequencies of " .. path, hists)
  print("histograms written to " .. svg)
end

return M
