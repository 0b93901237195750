-- Trains one small SAE of an architecture on the bundled tiny-1l model, for tests/run_feature_archs.sh
-- (which runs `saefw analyze` and `saefw features` on the checkpoint): --arch topk|batchtopk|jumprelu|
-- gated|relu|relu_april|transcoder, --run_dir DIR. Prints "checkpoint: PATH" and "train L0: X".
local saefw = require "saefw"
local cfg = saefw.config { arch = "topk", run_dir = "", model_name = "tiny-1l", site = "post", layer = 0, bos = 256,
                           seq_len = 64 }

local opts = {
  topk = { arch = "topk", k = 8, k_aux = 16, dead_steps = 20 },
  batchtopk = { arch = "batchtopk", k = 8, k_aux = 16, dead_steps = 20 },
  jumprelu = { arch = "jumprelu", threshold = 0.05, bandwidth = 0.05, l0_coeff = 1e-3 },
  gated = { arch = "gated", l1_coeff = 1e-3 },
  relu = { l1_coeff = 4e-4 },
  relu_april = { l1_coeff = 4e-4, init = "april", l1_weighting = "decoder_norm", apply_b_dec_to_input = false },
  transcoder = { l1_coeff = 4e-4, apply_b_dec_to_input = false },
}
local t = assert(opts[cfg.arch], "unknown --arch " .. cfg.arch)

local model = saefw.model(cfg.model_name)
local tokens = saefw.tokens(saefw.data_dir() .. "/models/tiny-1l/tokens.npy",
                            { seq_len = cfg.seq_len, seed = 7, bos = cfg.bos })
-- The transcoder reads the MLP's input and predicts its output (another site, another width).
local site = cfg.arch == "transcoder" and "ln2.hook_normalized" or cfg.site
local buffer = saefw.buffer { model = model, tokens = tokens, site = site, layer = cfg.layer, size = 2048,
                              batch_size = 256, seed = 7,
                              site_out = cfg.arch == "transcoder" and "mlp_out" or nil }
-- A transcoder's buffer rows are [input | target]: d_act counts both.
local d_target = cfg.arch == "transcoder" and buffer.d_target or 0
t.d_in, t.d_sae, t.seed = buffer.d_act - d_target, 4 * (buffer.d_act - d_target), 9
if d_target > 0 then t.d_out = d_target end
local sae = saefw.sae(t)
-- BatchTopK's inference threshold is an average (rate 0.01) from 0: 400 steps bring it within 2% of
-- its value, so the L0 of the checkpoint is near k.
local steps = cfg.arch == "batchtopk" and 400 or 60
local r = saefw.train {
  sae = sae, buffer = buffer, steps = steps, seed = 11, optimizer = saefw.plugin("adam", { lr = 1e-3 }),
  log_every = 20, eval_every = steps, checkpoint_every = steps, freq_batches = 1, recons_batches = 0,
  run_dir = cfg.run_dir, progress = false, config = cfg,
}
print(string.format("%s: loss %.6f", cfg.arch, r.loss))
print(string.format("train L0: %.6f", r.l0))
print("checkpoint: " .. r.checkpoint)

-- The feature report refuses a transcoder through the Lua API too: from its checkpoint, and as an object
-- whose W_dec rows (d_out 64) are narrower than its input (d_mlp 256), which the report's decoder
-- analysis used to read past.
if cfg.arch == "transcoder" then
  local function refused(t, want)
    local ok, e = pcall(saefw.features, t)
    assert(not ok and tostring(e):find(want, 1, true), "saefw.features: wanted '" .. want .. "', got " .. tostring(e))
  end
  refused({ sae = r.checkpoint, n_tokens = 256, out = cfg.run_dir .. "/lua_report" },
          r.checkpoint .. ": a transcoder (its decoder writes blocks.0.hook_mlp_out, not the site it reads)")
  local wide = saefw.sae { d_in = model.d_mlp, d_out = model.d_model, d_sae = 64, apply_b_dec_to_input = false }
  refused({ sae = wide, model = model, tokens = tokens, site = "blocks.0.mlp.hook_post", n_tokens = 256 },
          "features: the SAE is a transcoder (its decoder writes another site than it reads)")
  print("transcoder: saefw.features refuses it, from a checkpoint and as an object")
end
