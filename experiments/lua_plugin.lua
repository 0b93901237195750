-- A plugin written in Lua: the remove_rare_dir experiment's projection, prototyped in a few lines.
-- With a fixed unit direction d in activation space, after the backward pass
-- W_enc.grad -= d (d . W_enc.grad), and after the optimizer step W_enc -= d (d . W_enc), so every
-- encoder column stays orthogonal to d. (plugins/remove_rare_dir is the same in C, for real runs.)
--   saefw run experiments/lua_plugin.lua [--steps 500]
local saefw = require "saefw"

local cfg = saefw.config { seed = 49, d_in = 16, dict_mult = 4, steps = 300, lr = 1e-3, l1_coeff = 1e-3,
                           batch_size = 128, direction_seed = 3 }

-- A fixed random unit direction.
local d, norm = {}, 0
local state = cfg.direction_seed
for i = 1, cfg.d_in do
  state = (state * 1103515245 + 12345) % 2147483648
  d[i] = state / 2147483648 - 0.5
  norm = norm + d[i] * d[i]
end
for i = 1, cfg.d_in do d[i] = d[i] / math.sqrt(norm) end

-- Remove from every column of a [d_in, d_sae] tensor its component along d.
local function project(get, set, rows, cols)
  for j = 1, cols do
    local dot = 0
    for i = 1, rows do dot = dot + d[i] * get(i, j) end
    for i = 1, rows do set(i, j, get(i, j) - d[i] * dot) end
  end
end

local function max_dot(W)
  local worst = 0
  for j = 1, W.cols do
    local dot = 0
    for i = 1, W.rows do dot = dot + d[i] * W:get(i, j) end
    worst = math.max(worst, math.abs(dot))
  end
  return worst
end

local remove_dir = saefw.lua_plugin {
  name = "remove_dir_lua", kind = "experiment",
  after_backward = function(ctx)
    local W = ctx:param("W_enc")
    project(function(i, j) return W:grad(i, j) end, function(i, j, v) W:set_grad(i, j, v) end, W.rows, W.cols)
  end,
  after_step = function(ctx)
    local W = ctx:param("W_enc")
    project(function(i, j) return W:get(i, j) end, function(i, j, v) W:set(i, j, v) end, W.rows, W.cols)
  end,
  on_eval = function(ctx) ctx:metric("max_abs_dir_dot", max_dot(ctx:param("W_enc"))) end,
  on_end = function(ctx) ctx:metric("max_abs_dir_dot", max_dot(ctx:param("W_enc"))) end,
}

local source = saefw.synthetic { d_in = cfg.d_in, n_features = 32, p_active = 0.05, seed = 7 }
local sae = saefw.sae { d_in = cfg.d_in, d_sae = cfg.d_in * cfg.dict_mult, l1_coeff = cfg.l1_coeff, seed = cfg.seed }
local result = saefw.train {
  sae = sae, source = source, batch_size = cfg.batch_size, steps = cfg.steps, seed = cfg.seed,
  optimizer = saefw.plugin("adam", { lr = cfg.lr }), plugins = { remove_dir },
  log_every = 100, eval_every = 100, run_dir = false,
}
print(string.format("final loss %.5f; max |d . W_enc column| = %.3g", result.loss, result.max_abs_dir_dot))
