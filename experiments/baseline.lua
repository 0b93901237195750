-- The seed recipe on gelu-1l: an SAE with 8x the MLP width on blocks.0.mlp.hook_post, trained on
-- 2B tokens with Adam, L2 + L1 loss, unit-norm decoder, the shuffled bf16 buffer, reconstruction
-- score and feature frequencies every 1000 steps, dead features re-initialised every 30000 steps
-- (the reinit_dead plugin), and a checkpoint every 30000 steps.
--
--   saefw download NeelNanda/GELU_1L512W_C4_Code config.json model_final.pth
--   saefw download --dataset NeelNanda/c4-code-tokenized-2b
--   saefw run experiments/baseline.lua
--
-- The data default is the seed's own tokens, the Hub dataset NeelNanda/c4-code-tokenized-2b (Parquet
-- shards, rows of 1024 tokens), read from the huggingface_hub cache and converted once into a flat
-- token cache (`saefw tokens convert` does that step alone). Each row is cut into 8 rows of 128 with
-- position 0 set to BOS, as the seed did. --data also takes a folder or glob of Parquet shards, or a
-- token file (.npy, raw .bin, safetensors, .pt such as the seed's c4_code_2b_tokens_reshaped.pt).
local saefw = require "saefw"

local cfg = saefw.config {
  seed = 49, batch_size = 4096, buffer_mult = 384, lr = 1e-4, num_tokens = 2e9, l1_coeff = 3e-4,
  beta1 = 0.9, beta2 = 0.99, dict_mult = 8, seq_len = 128, enc_dtype = "fp32", buffer_dtype = "bf16",
  remove_rare_dir = false, model_name = "gelu-1l", site = "post", layer = 0,
  -- bos 0: <|endoftext|>, the BOS of gelu-1l's tokenizer (NeelNanda/gpt-neox-tokenizer-digits)
  data = "hf://datasets/NeelNanda/c4-code-tokenized-2b", bos = 0,
  log_every = 100, eval_every = 1000, checkpoint_every = 30000, reinit_every = 30000,
  reinit_threshold = 10 ^ -5.5, recons_batches = 5, run_dir = "",
  -- true: reinit_dead counts frequencies over the training batches since its last check (SAELens's
  -- way, no SAE pass of its own) instead of the seed's 50 fresh batches
  reinit_from_steps = false,
}
local model = saefw.model(cfg.model_name)
local tokens = saefw.tokens(cfg.data, { seq_len = cfg.seq_len, seed = cfg.seed,
                                        bos = cfg.bos >= 0 and cfg.bos or nil })
local buffer = saefw.buffer { model = model, tokens = tokens, site = cfg.site, layer = cfg.layer,
                              size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size,
                              dtype = cfg.buffer_dtype, seed = cfg.seed }
local sae = saefw.sae { d_in = buffer.d_act, d_sae = buffer.d_act * cfg.dict_mult,
                        l1_coeff = cfg.l1_coeff, seed = cfg.seed, enc_dtype = cfg.enc_dtype }

local plugins = { saefw.plugin("reinit_dead", { every = cfg.reinit_every, threshold = cfg.reinit_threshold,
                                               from_steps = cfg.reinit_from_steps }) }

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
