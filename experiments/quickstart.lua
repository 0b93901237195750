-- The seed's pipeline end to end on the tiny model bundled with saefw (no download): tokens ->
-- transformer -> blocks.0.mlp.hook_post -> shuffled buffer -> SAE, with the reconstruction score and
-- feature frequencies at every eval, then the feature report of the trained SAE (report_tokens = 0
-- skips it). A couple of minutes on 2 cores:
--   saefw run experiments/quickstart.lua [--num_tokens 2e6 ...]
local saefw = require "saefw"

local cfg = saefw.config {
  seed = 49, batch_size = 1024, buffer_mult = 64, lr = 1e-3, num_tokens = 1.5e6, l1_coeff = 4e-4,
  beta1 = 0.9, beta2 = 0.99, dict_mult = 8, seq_len = 128, enc_dtype = "fp32", buffer_dtype = "bf16",
  model_name = "tiny-1l", site = "post", layer = 0, data = "", bos = 256,
  log_every = 100, eval_every = 1000, checkpoint_every = 2000, recons_batches = 5, recons_eval = "fixed", run_dir = "",
  report_tokens = 131072, eval_freq = "auto",
}
local data = cfg.data ~= "" and cfg.data or (saefw.data_dir() .. "/models/tiny-1l/tokens.npy")

local model = saefw.model(cfg.model_name)
-- The seed's preprocessing: rows of seq_len tokens with position 0 set to BOS (256 for tiny-1l's bytes).
local tokens = saefw.tokens(data, { seq_len = cfg.seq_len, seed = cfg.seed, bos = cfg.bos >= 0 and cfg.bos or nil })
local buffer = saefw.buffer { model = model, tokens = tokens, site = cfg.site, layer = cfg.layer,
                              size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size,
                              dtype = cfg.buffer_dtype, seed = cfg.seed }
local sae = saefw.sae { d_in = buffer.d_act, d_sae = buffer.d_act * cfg.dict_mult,
                        l1_coeff = cfg.l1_coeff, seed = cfg.seed, enc_dtype = cfg.enc_dtype }
print(string.format("model %s: %d layer(s), d_model %d, d_mlp %d; %d token rows of %d; SAE %d -> %d",
                    model.name, model.n_layers, model.d_model, model.d_mlp, tokens.rows, tokens.seq_len,
                    sae.d_in, sae.d_sae))

local result = saefw.train {
  sae = sae, buffer = buffer, num_tokens = cfg.num_tokens, seed = cfg.seed,
  optimizer = saefw.plugin("adam", { lr = cfg.lr, beta1 = cfg.beta1, beta2 = cfg.beta2 }),
  log_every = cfg.log_every, eval_every = cfg.eval_every, checkpoint_every = cfg.checkpoint_every,
  recons_batches = cfg.recons_batches, recons_eval = cfg.recons_eval, eval_freq = cfg.eval_freq,
  run_dir = cfg.run_dir ~= "" and cfg.run_dir or nil, config = cfg,
}
print(string.format("final: loss %.5f, L0 %.2f, explained variance %.4f, dead %.4f",
                    result.loss, result.l0, result.explained_variance, result.dead))
print(string.format("reconstruction score %.4f (loss clean %.4f, with the SAE %.4f, zero-ablated %.4f)",
                    result.recons_score, result.loss_clean, result.loss_recons, result.loss_zero_abl))
print("checkpoint: " .. result.checkpoint)

-- What the features mean: top contexts, activation histograms and logit effects of every feature, as
-- a static report beside the checkpoints (the same as `saefw features CHECKPOINT --out DIR`).
if cfg.report_tokens > 0 then
  local run_dir = result.checkpoint:match("^(.*)/[^/]+$") or "."
  local report = saefw.features { sae = result.checkpoint, n_tokens = cfg.report_tokens, out = run_dir .. "/report",
                                  summary_only = true }
  print(string.format("feature report (%d tokens, %d of %d features dead): %s", report.tokens_analyzed, report.dead,
                      report.d_sae, report.path))
end
