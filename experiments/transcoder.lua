-- A transcoder (Dunefsky, Chlenski, Nanda 2024; docs/architectures.md) on the tiny model bundled with
-- saefw: it reads the MLP's input (blocks.0.ln2.hook_normalized) and is trained to give the MLP's
-- output (blocks.0.hook_mlp_out). The buffer holds both sites per token; the reconstruction score
-- replaces hook_mlp_out with the transcoder's output computed from the same forward's input site.
--   saefw run experiments/transcoder.lua [--num_tokens 2e6 ...]
local saefw = require "saefw"

local cfg = saefw.config {
  seed = 49, batch_size = 1024, buffer_mult = 64, lr = 1e-3, num_tokens = 1e6, l1_coeff = 4e-4,
  beta1 = 0.9, beta2 = 0.99, dict_mult = 8, seq_len = 128, buffer_dtype = "bf16",
  model_name = "tiny-1l", d_in = 0, site = "ln2.hook_normalized", site_out = "mlp_out", layer = 0, data = "", bos = 256,
  log_every = 100, eval_every = 500, checkpoint_every = 2000, recons_batches = 5, recons_eval = "fixed", run_dir = "",
}
local data = cfg.data ~= "" and cfg.data or (saefw.data_dir() .. "/models/tiny-1l/tokens.npy")

local model = saefw.model(cfg.model_name)
-- The transcoder names the sites it reads and reconstructs: their widths on the model give d_in and
-- d_out, and a width given that does not match is an error here, before the buffer runs the model.
-- (--d_in N states a width, to be checked against the site's.)
local d_in = cfg.d_in > 0 and cfg.d_in or model:hook_width(cfg.site, cfg.layer)
local sae = saefw.sae { model = model, site = cfg.site, layer = cfg.layer, site_out = cfg.site_out,
                        layer_out = cfg.layer, d_in = d_in, d_sae = d_in * cfg.dict_mult,
                        apply_b_dec_to_input = false, l1_coeff = cfg.l1_coeff, seed = cfg.seed }
local tokens = saefw.tokens(data, { seq_len = cfg.seq_len, seed = cfg.seed, bos = cfg.bos >= 0 and cfg.bos or nil })
local buffer = saefw.buffer { model = model, tokens = tokens, site = cfg.site, layer = cfg.layer,
                              site_out = cfg.site_out, layer_out = cfg.layer,
                              size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size,
                              dtype = cfg.buffer_dtype, seed = cfg.seed }
print(string.format("model %s: %d token rows of %d; transcoder %s (%d) -> %s (%d), %d latents", model.name,
                    tokens.rows, tokens.seq_len, cfg.site, sae.d_in, cfg.site_out, sae.d_out, sae.d_sae))

local result = saefw.train {
  sae = sae, buffer = buffer, num_tokens = cfg.num_tokens, seed = cfg.seed,
  optimizer = saefw.plugin("adam", { lr = cfg.lr, beta1 = cfg.beta1, beta2 = cfg.beta2 }),
  log_every = cfg.log_every, eval_every = cfg.eval_every, checkpoint_every = cfg.checkpoint_every,
  recons_batches = cfg.recons_batches, recons_eval = cfg.recons_eval,
  run_dir = cfg.run_dir ~= "" and cfg.run_dir or nil, config = cfg,
}
print(string.format("final: loss %.5f, L0 %.2f, explained variance %.4f, dead %.4f",
                    result.loss, result.l0, result.explained_variance, result.dead))
print(string.format("transcoder reconstruction score %.4f (loss clean %.4f, with the transcoder %.4f, " ..
                    "MLP output zero-ablated %.4f)",
                    result.recons_score, result.loss_clean, result.loss_recons, result.loss_zero_abl))
print("checkpoint: " .. result.checkpoint)
