-- Anthropic's April 2024 recipe ("Circuits Updates - April 2024") on the tiny model bundled with saefw,
-- like experiments/quickstart.lua: no b_dec subtracted from the input, a decoder-norm-weighted L1 with
-- its coefficient warmed up over the first 5 % of steps, the April init, no unit-norm decoder, gradients
-- clipped to norm 1, Adam(0.9, 0.999) with the learning rate decayed linearly to 0 over the last 20 %.
-- The schedules are the `schedule` plugin (docs/plugins.md). A couple of minutes on 2 cores:
--   saefw run experiments/april_update.lua [--num_tokens 2e6 --l1_coeff 1 ...]
local saefw = require "saefw"

local cfg = saefw.config {
  seed = 49, batch_size = 1024, buffer_mult = 64, lr = 4e-4, num_tokens = 1.5e6, l1_coeff = 0.5,
  beta1 = 0.9, beta2 = 0.999, dict_mult = 8, seq_len = 128, buffer_dtype = "bf16",
  clip_grad_norm = 1.0, lr_warmup_frac = 0.0, lr_decay_frac = 0.2, l1_warmup_frac = 0.05,
  model_name = "tiny-1l", site = "post", layer = 0, data = "", bos = 256,
  log_every = 100, eval_every = 500, checkpoint_every = 0, recons_batches = 5, run_dir = "",
}
local data = cfg.data ~= "" and cfg.data or (saefw.data_dir() .. "/models/tiny-1l/tokens.npy")

local model = saefw.model(cfg.model_name)
local tokens = saefw.tokens(data, { seq_len = cfg.seq_len, seed = cfg.seed, bos = cfg.bos >= 0 and cfg.bos or nil })
local buffer = saefw.buffer { model = model, tokens = tokens, site = cfg.site, layer = cfg.layer,
                              size = cfg.batch_size * cfg.buffer_mult, batch_size = cfg.batch_size,
                              dtype = cfg.buffer_dtype, seed = cfg.seed }
local sae = saefw.sae { d_in = buffer.d_act, d_sae = buffer.d_act * cfg.dict_mult, l1_coeff = cfg.l1_coeff,
                        seed = cfg.seed, apply_b_dec_to_input = false, l1_weighting = "decoder_norm",
                        init = "april" }

-- The schedules count steps; the run's length is num_tokens / batch_size steps.
local steps = math.floor(cfg.num_tokens / cfg.batch_size)
local schedule = saefw.plugin("schedule", {
  lr_warmup_steps = math.floor(cfg.lr_warmup_frac * steps),
  lr_decay_steps = math.floor(cfg.lr_decay_frac * steps),
  coeff = "l1", coeff_warmup_steps = math.floor(cfg.l1_warmup_frac * steps),
})
print(string.format("April recipe: SAE %d -> %d, %d steps (lr decay over the last %d, L1 warm-up over the first %d), "
                    .. "clipping at %g", sae.d_in, sae.d_sae, steps, math.floor(cfg.lr_decay_frac * steps),
                    math.floor(cfg.l1_warmup_frac * steps), cfg.clip_grad_norm))

local result = saefw.train {
  sae = sae, buffer = buffer, steps = steps, seed = cfg.seed,
  optimizer = saefw.plugin("adam", { lr = cfg.lr, beta1 = cfg.beta1, beta2 = cfg.beta2 }),
  plugins = { schedule }, clip_grad_norm = cfg.clip_grad_norm, unit_norm_decoder = false,
  log_every = cfg.log_every, eval_every = cfg.eval_every, checkpoint_every = cfg.checkpoint_every,
  recons_batches = cfg.recons_batches, run_dir = cfg.run_dir ~= "" and cfg.run_dir or nil, config = cfg,
}
print(string.format("final: loss %.5f, L0 %.2f, explained variance %.4f, dead %.4f",
                    result.loss, result.l0, result.explained_variance, result.dead))
print(string.format("reconstruction score %.4f (loss clean %.4f, with the SAE %.4f, zero-ablated %.4f)",
                    result.recons_score, result.loss_clean, result.loss_recons, result.loss_zero_abl))
print("checkpoint: " .. result.checkpoint)
