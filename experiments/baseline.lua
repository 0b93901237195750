-- The seed recipe on gelu-1l: an SAE with 8x the MLP width on blocks.0.mlp.hook_post, trained on
-- 2B tokens with Adam, L2 + L1 loss, unit-norm decoder, the shuffled bf16 buffer, reconstruction
-- score and feature frequencies every 1000 steps, dead features re-initialised every 30000 steps
-- (the reinit_dead plugin), and a checkpoint every 30000 steps.
--
--   saefw download NeelNanda/GELU_1L512W_C4_Code config.json model_final.pth
--   saefw run experiments/baseline.lua --data path/to/c4_code_2b_tokens_reshaped.pt
--
-- The token file may be the seed's own c4_code_2b_tokens_reshaped.pt ([rows, 128] int64, already
-- cut, BOS-prefixed and shuffled), or any .npy / raw .bin / safetensors / .pt token file: rows are
-- cut into seq_len pieces; set --bos to the tokenizer's BOS id to overwrite position 0 as the seed did.
local saefw = require "saefw"

local cfg = saefw.config {
  seed = 49, batch_size = 4096, buffer_mult = 384, lr = 1e-4, num_tokens = 2e9, l1_coeff = 3e-4,
  beta1 = 0.9, beta2 = 0.99, dict_mult = 8, seq_len = 128, enc_dtype = "fp32", buffer_dtype = "bf16",
  remove_rare_dir = false, model_name = "gelu-1l", site = "post", layer = 0, data = "", bos = -1,
  log_every = 100, eval_every = 1000, checkpoint_every = 30000, reinit_every = 30000,
  reinit_threshold = 10 ^ -5.5, recons_batches = 5, run_dir = "",
}
if cfg.data == "" then
  error("baseline: give the token file with --data PATH (.npy, .bin, .safetensors or .pt; the seed used "
        .. "c4_code_2b_tokens_reshaped.pt, the tokens of NeelNanda/c4-code-tokenized-2b)", 0)
end

local model = saefw.model(cfg.model_name)
local tokens = saefw.tokens(cfg.data, { seq_len = cfg.seq_len, seed = cfg.seed,
                                        bos = cfg.bos >= 0 and cfg.bos or nil })
local buffer = saefw.buffer { model = model, tokens = tokens, site = cfg.site, layer = cfg.layer,
                              size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size,
                              dtype = cfg.buffer_dtype, seed = cfg.seed }
local sae = saefw.sae { d_in = buffer.d_act, d_sae = buffer.d_act * cfg.dict_mult,
                        l1_coeff = cfg.l1_coeff, seed = cfg.seed }

local plugins = { saefw.plugin("reinit_dead", { every = cfg.reinit_every, threshold = cfg.reinit_threshold }) }

local result = saefw.train {
  sae = sae, buffer = buffer, num_tokens = cfg.num_tokens, seed = cfg.seed,
  optimizer = saefw.plugin("adam", { lr = cfg.lr, beta1 = cfg.beta1, beta2 = cfg.beta2 }),
  plugins = plugins, log_every = cfg.log_every, eval_every = cfg.eval_every,
  checkpoint_every = cfg.checkpoint_every, freq_batches = 5, recons_batches = cfg.recons_batches,
  run_dir = cfg.run_dir ~= "" and cfg.run_dir or nil, config = cfg,
}
print(string.format("final: loss %.5f, L0 %.2f, reconstruction score %.4f, dead %.4f",
                    result.loss, result.l0, result.recons_score or 0 / 0, result.dead))
print("checkpoint: " .. result.checkpoint)
