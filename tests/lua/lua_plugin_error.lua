-- CLI test: a Lua plugin whose callback fails on line 7 at step 3; the run stops naming it.
local saefw = require "saefw"
local bad = saefw.lua_plugin {
  name = "bad_lua",
  after_step = function(ctx)
    if ctx.step == 3 then
      error("deliberate failure at step " .. ctx.step)
    end
  end,
}
saefw.train {
  sae = saefw.sae { d_in = 8, d_sae = 16 }, source = saefw.synthetic { d_in = 8, n_features = 8 },
  batch_size = 16, steps = 10, optimizer = saefw.plugin("sgd"), plugins = { bad }, run_dir = false,
}
