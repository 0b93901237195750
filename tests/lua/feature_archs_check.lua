-- Checks one `saefw features` report against the SAE it describes, for tests/run_feature_archs.sh:
-- summary.json names the SAE's width, hook and token count; features.jsonl has one line per feature,
-- whose frequencies sum to a mean L0 that agrees with `saefw analyze`'s (topk: exactly k); the dead
-- count is the command's; every live feature lists a top-activating example whose peak is the
-- feature's maximum, and no dead feature lists one. Any failure is a Lua error.
local saefw = require "saefw"
local cfg = saefw.config { report = "", arch = "", d_sae = 0, hook = "", tokens = 0, dead = -1, analyze_l0 = -1.0,
                           train_l0 = -1.0, k = 0 }
local function fail(fmt, ...) error(string.format("%s: " .. fmt, cfg.arch, ...), 0) end

local f = assert(io.open(cfg.report .. "/summary.json", "r"))
local summary = f:read("a")
f:close()
for _, want in ipairs { '"d_sae":' .. math.floor(cfg.d_sae) .. ",", '"hook_name":"' .. cfg.hook .. '"',
                        '"tokens_analyzed":' .. math.floor(cfg.tokens) .. "," } do
  if not summary:find(want, 1, true) then fail("summary.json lacks %s", want) end
end

local n, l0, dead, live_with_example = 0, 0.0, 0, 0
for line in io.lines(cfg.report .. "/features.jsonl") do
  local i = tonumber(line:match('^{"index":(%d+),'))
  if i ~= n then fail("features.jsonl line %d has index %s", n + 1, tostring(i)) end
  local density = tonumber(line:match('"frac_nonzero":([^,]+),'))
  local max_act = tonumber(line:match('"maxActApprox":([^,]+),'))
  if not density or not (density >= 0 and density <= 1) then fail("feature %d: frac_nonzero %s", i, tostring(density)) end
  if not max_act then fail("feature %d: no maxActApprox", i) end
  local acts = line:match('"activations":%[(.*)%]}$')
  if not acts then fail("feature %d: no activations list", i) end
  local first_max = tonumber(acts:match('"maxValue":([^,]+),'))
  if density > 0 then
    -- The first example is the top one: its peak is the feature's largest activation, above zero.
    if not first_max then fail("feature %d (density %g) lists no example", i, density) end
    if not (max_act > 0 and math.abs(first_max - max_act) <= 1e-4 * max_act) then
      fail("feature %d: top example's peak %g, maxActApprox %g", i, first_max, max_act)
    end
    if not acts:find('"tokens":%[".') then fail("feature %d: the top example has no tokens", i) end
    live_with_example = live_with_example + 1
  else
    if first_max then fail("dead feature %d lists an example", i) end
    dead = dead + 1
  end
  l0 = l0 + density
  n = n + 1
end
if n ~= cfg.d_sae then fail("features.jsonl has %d features, the SAE %d", n, cfg.d_sae) end
if dead ~= cfg.dead then fail("%d dead features in features.jsonl, the command said %d", dead, cfg.dead) end
if live_with_example == 0 then fail("no live feature") end

-- Densities are written with 6 digits: their sum is exact to about d_sae * 5e-7 relative.
local function near(a, b, rel) return math.abs(a - b) <= rel * math.abs(b) end
if cfg.k > 0 and cfg.arch == "topk" then
  -- Every token keeps exactly its k largest (positive) pre-activations, in every pass.
  for _, v in ipairs { { "features", l0 }, { "analyze", cfg.analyze_l0 }, { "training", cfg.train_l0 } } do
    if not near(v[2], cfg.k, 1e-3) then fail("%s's mean L0 %.6f, not k = %d", v[1], v[2], cfg.k) end
  end
elseif cfg.k > 0 then
  -- batchtopk: k per token on average over a training batch; at inference a threshold, so near k.
  if not (l0 > cfg.k / 2 and l0 < cfg.k * 2) then fail("mean L0 %.4f far from k = %d", l0, cfg.k) end
end
-- analyze reads shuffled tokens, features the first ones in file order: near, not equal.
-- So does the training's last batch.
if not (l0 > 0 and near(l0, cfg.analyze_l0, 0.3) and near(l0, cfg.train_l0, 0.3)) then
  fail("features' mean L0 %.4f disagrees with analyze's %.4f or the training's %.4f", l0, cfg.analyze_l0,
       cfg.train_l0)
end
print(string.format("%s: report of %d features, %d dead, %d live with a top example; mean L0 %.4f (analyze %.4f, "
                    .. "training %.4f)", cfg.arch, n, dead, live_with_example, l0, cfg.analyze_l0, cfg.train_l0))
