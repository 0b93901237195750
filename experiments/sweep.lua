-- A sweep on the bundled tiny model: one SAE per value of l1_coeff, all trained on the same batches
-- (the model runs once per buffer refill), then the L0 / reconstruction-score frontier as a table
-- and an SVG plot (<run folder>/frontier.svg). Each SAE has its own folder under the run folder.
--   saefw run experiments/sweep.lua [--values 1e-4,4e-4,1.6e-3 --num_tokens 5e5 ...]
-- A k sweep of top-k SAEs:
--   saefw run experiments/sweep.lua --arch topk --param k --values 8,16,32,64
local saefw = require "saefw"
local sweep = require "saefw.sweep"

local cfg = saefw.config {
  seed = 49, batch_size = 512, buffer_mult = 64, lr = 1e-3, num_tokens = 4e5, dict_mult = 4, seq_len = 128,
  buffer_dtype = "bf16", model_name = "tiny-1l", site = "post", layer = 0, data = "", bos = 256,
  param = "l1_coeff", values = "1e-4,2e-4,4e-4,8e-4,1.6e-3", l1_coeff = 4e-4, arch = "",
  log_every = 200, eval_every = 400, checkpoint_every = 0, recons_batches = 5, run_dir = "",
}
local data = cfg.data ~= "" and cfg.data or (saefw.data_dir() .. "/models/tiny-1l/tokens.npy")

local model = saefw.model(cfg.model_name)
local tokens = saefw.tokens(data, { seq_len = cfg.seq_len, seed = cfg.seed, bos = cfg.bos >= 0 and cfg.bos or nil })
local buffer = saefw.buffer { model = model, tokens = tokens, site = cfg.site, layer = cfg.layer,
                              size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size,
                              dtype = cfg.buffer_dtype, seed = cfg.seed }

local values = {}
for v in cfg.values:gmatch("[^,%s]+") do
  local x = tonumber(v)
  if not x then error(string.format("--values: '%s' is not a number (give a comma-separated list)", v), 0) end
  values[#values + 1] = x
end
if #values == 0 then error("--values: give at least one value", 0) end

local saes = {}
for _, v in ipairs(values) do
  local opts = { d_in = buffer.d_act, d_sae = buffer.d_act * cfg.dict_mult, seed = cfg.seed }
  if cfg.arch ~= "" then opts.arch = cfg.arch end
  -- l1_coeff belongs to the relu and gated SAEs only (topk's sparsity is k, jumprelu's is l0_coeff).
  if cfg.arch == "" or cfg.arch == "relu" or cfg.arch == "gated" then opts.l1_coeff = cfg.l1_coeff end
  opts[cfg.param] = math.tointeger(v) or v -- k must be an integer; a coefficient such as 1e-4 stays a float
  saes[#saes + 1] = { name = string.format("%s_%g", cfg.param, v), sae = saefw.sae(opts),
                      optimizer = saefw.plugin("adam", { lr = cfg.lr }) }
end
print(string.format("sweep of %s over %s: %d SAEs of %d -> %d on %s, %g tokens", cfg.param, cfg.values, #saes,
                    buffer.d_act, buffer.d_act * cfg.dict_mult, model.name, cfg.num_tokens))

local results = saefw.train {
  saes = saes, buffer = buffer, num_tokens = cfg.num_tokens, seed = cfg.seed, log_every = cfg.log_every,
  eval_every = cfg.eval_every, checkpoint_every = cfg.checkpoint_every, recons_batches = cfg.recons_batches,
  run_dir = cfg.run_dir ~= "" and cfg.run_dir or nil, config = cfg,
}

local rows = sweep.frontier(results, values)
print(sweep.table(rows, cfg.param))
-- The run folder: the one above each SAE's folder (<run folder>/<name>/final).
local run_dir = results[1].checkpoint:match("^(.*)/[^/]+/[^/]+$") or "."
local svg = run_dir .. "/frontier.svg"
local n = sweep.write_svg(svg, rows, { title = string.format("%s sweep on %s: L0 against reconstruction score", cfg.param, model.name) })
print(string.format("frontier plot (%d points): %s", n, svg))
