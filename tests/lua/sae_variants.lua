-- The ReLU SAE's 2024-recipe and transcoder options through saefw.sae{}, sae:save and saefw.load_sae
-- (run from tests/ by ctest): the April init, the cfg.json fields in SAELens's names read back, and a
-- one-line error for each bad value. Any failed check raises an error (non-zero exit).
local saefw = require "saefw"

local function expect_error(f, pattern, what)
  local ok, err = pcall(f)
  if ok then error(what .. ": no error", 0) end
  if not tostring(err):find(pattern) then error(string.format("%s: error '%s' lacks '%s'", what, tostring(err), pattern), 0) end
  if tostring(err):find("\n") then error(what .. ": error spans lines: " .. tostring(err), 0) end
end

local dir = os.getenv("SAEFW_TEST_TMP") or "/tmp"

-- The April init: W_dec rows of norm 0.1, W_enc = W_dec^T, zero biases.
local s = saefw.sae { d_in = 8, d_sae = 16, seed = 3, init = "april", apply_b_dec_to_input = false,
                      l1_weighting = "decoder_norm", l1_coeff = 5 }
assert(s.apply_b_dec_to_input == false and s.l1_weighting == "decoder_norm" and s.d_out == 8, "relu_april fields")
local W_dec, W_enc, b_enc = s:tensor("W_dec"), s:tensor("W_enc"), s:tensor("b_enc")
for j = 0, 15 do
  local ss = 0
  for i = 0, 7 do
    local w = W_dec[j * 8 + i + 1]
    ss = ss + w * w
    assert(W_enc[i * 16 + j + 1] == w, "W_enc is not W_dec^T")
  end
  assert(math.abs(math.sqrt(ss) - 0.1) < 1e-6, "W_dec row norm " .. math.sqrt(ss))
  assert(b_enc[j + 1] == 0, "b_enc not zero")
end
print("init = \"april\": ok")

-- cfg.json in SAELens's names, read back by load_sae.
os.execute("rm -rf '" .. dir .. "/sv_april' '" .. dir .. "/sv_tc'")
s:save(dir .. "/sv_april")
local s2, cfg = saefw.load_sae(dir .. "/sv_april")
assert(cfg.apply_b_dec_to_input == false and cfg.scale_sparsity_penalty_by_decoder_norm == true and
       cfg.normalize_sae_decoder == false and cfg.architecture == "standard", "relu_april cfg.json")
assert(s2.apply_b_dec_to_input == false and s2.l1_weighting == "decoder_norm", "relu_april after load_sae")
local plain_dir = dir .. "/sv_plain"
os.execute("rm -rf '" .. plain_dir .. "'")
saefw.sae { d_in = 4, d_sae = 8 }:save(plain_dir)
local _, pcfg = saefw.load_sae(plain_dir)
assert(pcfg.apply_b_dec_to_input == true and pcfg.scale_sparsity_penalty_by_decoder_norm == false and
       pcfg.normalize_sae_decoder == true and pcfg.d_out == nil, "the seed's cfg.json")

local tc = saefw.sae { d_in = 8, d_out = 12, d_sae = 16, apply_b_dec_to_input = false }
local _, shape = tc:tensor("W_dec")
assert(shape[1] == 16 and shape[2] == 12 and #tc:tensor("b_dec") == 12 and tc.d_out == 12, "transcoder shapes")
tc:save(dir .. "/sv_tc", { hook_name = "blocks.0.ln2.hook_normalized", hook_name_out = "blocks.0.hook_mlp_out" })
local tc2, tcfg = saefw.load_sae(dir .. "/sv_tc")
assert(tcfg.architecture == "transcoder" and tcfg.d_out == 12 and tcfg.hook_name_out == "blocks.0.hook_mlp_out" and
       tcfg.hook_layer_out == 0 and tcfg.apply_b_dec_to_input == false, "transcoder cfg.json")
assert(tc2.d_in == 8 and tc2.d_out == 12 and tc2.apply_b_dec_to_input == false, "transcoder after load_sae")
print("cfg.json fields through save and load_sae: ok")

-- Bad values: one line each, at saefw.sae{}, before any training.
expect_error(function() saefw.sae { d_in = 8, d_out = 12, d_sae = 16, apply_b_dec_to_input = true } end,
             "saefw%.sae: a transcoder %(d_out given%) needs apply_b_dec_to_input = false", "transcoder with b_dec input")
expect_error(function() saefw.sae { d_in = 8, d_out = 0, d_sae = 16 } end, "field 'd_out'", "d_out 0")
expect_error(function() saefw.sae { d_in = 8, d_sae = 16, l1_weighting = "norm" } end,
             "saefw%.sae: field l1_weighting must be \"plain\" or \"decoder_norm\" %(got 'norm'%)", "bad l1_weighting")
expect_error(function() saefw.sae { d_in = 8, d_sae = 16, init = "xavier" } end,
             "saefw%.sae: field init must be \"kaiming\" or \"april\" %(got 'xavier'%)", "bad init")
expect_error(function() saefw.sae { d_in = 8, d_out = 12, d_sae = 16, apply_b_dec_to_input = false, init = "april" } end,
             "needs d_out = d_in", "april init of a transcoder of another width")
expect_error(function() saefw.sae { d_in = 8, d_sae = 16, apply_b_dec_to_input = "no" } end,
             "apply_b_dec_to_input", "non-boolean apply_b_dec_to_input")
local src = saefw.synthetic { d_in = 8, n_features = 8 }
expect_error(function()
  saefw.train { sae = tc, source = src, batch_size = 16, steps = 2, optimizer = saefw.plugin("sgd"), run_dir = false }
end, "transcoder", "training a transcoder from one site")
-- A transcoder's data: two sites in one buffer; the order of the sites and the widths are checked.
local model = saefw.model("tiny-1l")
local toks = saefw.tokens(saefw.data_dir() .. "/models/tiny-1l/tokens.npy", { seq_len = 32, bos = 256 })
expect_error(function()
  saefw.buffer { model = model, tokens = toks, site = "mlp_out", site_out = "ln2.hook_normalized", size = 256,
                 batch_size = 64 }
end, "target site must come after the input site", "target before input")
local tbuf = saefw.buffer { model = model, tokens = toks, site = "ln2.hook_normalized", site_out = "mlp_out",
                            size = 256, batch_size = 64 }
assert(tbuf.d_act == 128 and tbuf.d_target == 64, "two-site buffer widths")
local wrong = saefw.sae { d_in = 64, d_out = 32, d_sae = 16, apply_b_dec_to_input = false }
expect_error(function()
  saefw.train { sae = wrong, buffer = tbuf, steps = 2, optimizer = saefw.plugin("sgd"), run_dir = false,
                progress = false }
end, "the target site has width 64, but the transcoder's d_out is 32", "transcoder of another width")
expect_error(function()
  saefw.train { sae = saefw.sae { d_in = 128, d_sae = 16 }, buffer = tbuf, steps = 2, optimizer = saefw.plugin("sgd"),
                run_dir = false, progress = false }
end, "but the SAE is not a transcoder", "an SAE on two-site data")
-- Sites at saefw.sae{}: the model's hook widths give d_in / d_out, a width given against them is a one-line
-- error there (before any buffer or training), and cfg.json names the sites from the SAE.
assert(model:hook_width("ln2.hook_normalized") == 64 and model:hook_width("post", 0) == model.d_mlp, "hook_width")
local sited = saefw.sae { model = model, site = "ln2.hook_normalized", site_out = "mlp_out", d_sae = 16,
                          apply_b_dec_to_input = false }
assert(sited.d_in == 64 and sited.d_out == 64 and sited.hook_name == "blocks.0.ln2.hook_normalized" and
       sited.hook_name_out == "blocks.0.hook_mlp_out", "transcoder from its sites")
expect_error(function()
  saefw.sae { model = model, site = "ln2.hook_normalized", site_out = "mlp_out", d_in = 512, d_sae = 16,
              apply_b_dec_to_input = false }
end, "saefw%.sae: d_in = 512 does not match site blocks%.0%.ln2%.hook_normalized, whose width is 64 on model tiny%-1l",
   "d_in against its site")
expect_error(function()
  saefw.sae { model = model, site = "ln2.hook_normalized", site_out = "post", d_out = 64, d_sae = 16,
              apply_b_dec_to_input = false }
end, "saefw%.sae: d_out = 64 does not match site_out blocks%.0%.mlp%.hook_post, whose width is " .. model.d_mlp,
   "d_out against its site")
expect_error(function()
  saefw.sae { model = model, site = "ln2.hook_normalized", site_out = "post", d_sae = 16, init = "april",
              apply_b_dec_to_input = false }
end, "needs d_out = d_in %(got d_in 64, d_out " .. model.d_mlp .. "%)", "april init across sites of two widths")
expect_error(function() saefw.sae { model = model, site = "ln2.hook_normalized", d_out = 64, d_sae = 16,
                                    apply_b_dec_to_input = false } end, "give site_out", "d_out without site_out")
expect_error(function() saefw.sae { site = "post", d_in = 8, d_sae = 16 } end, "need 'model'", "site without model")
expect_error(function() saefw.sae { model = model, site = "post", layer = 3, d_sae = 16 } end,
             "layer 3 is out of range", "site's layer out of range")
expect_error(function() saefw.sae { model = model, site = "post", arch = "topk", k = 4, site_out = "mlp_out",
                                    d_sae = 16 } end, "field 'site_out' does not apply", "site_out on topk")
expect_error(function()
  saefw.train { sae = saefw.sae { model = model, site = "resid_pre", site_out = "mlp_out", d_sae = 16,
                                  apply_b_dec_to_input = false },
                buffer = tbuf, steps = 2, optimizer = saefw.plugin("sgd"), run_dir = false, progress = false }
end, "the SAE was made for site blocks%.0%.hook_resid_pre, but the buffer captures blocks%.0%.ln2%.hook_normalized",
   "training on a buffer at other sites")
local sited_dir = dir .. "/sv_sited"
os.execute("rm -rf '" .. sited_dir .. "'")
sited:save(sited_dir, { hook_name = "blocks.0.hook_resid_pre", hook_name_out = "x" })
local _, scfg = saefw.load_sae(sited_dir)
assert(scfg.hook_name == "blocks.0.ln2.hook_normalized" and scfg.hook_name_out == "blocks.0.hook_mlp_out" and
       scfg.hook_layer == 0 and scfg.hook_layer_out == 0, "cfg.json's hook names come from the SAE")
saefw.train { sae = sited, buffer = tbuf, steps = 2, optimizer = saefw.plugin("sgd"), run_dir = false,
              progress = false }
print("sites at saefw.sae{}: ok")
-- Resamplers on a transcoder: anthropic_resample refuses it in one line (its decoder rows are the target
-- site's); reinit_dead writes decoder rows of d_out = 64 < d_in = 256 (it used d_in's stride).
local nbuf = saefw.buffer { model = model, tokens = toks, site = "post", site_out = "mlp_out", size = 256,
                            batch_size = 64 }
local narrow = saefw.sae { model = model, site = "post", site_out = "mlp_out", d_sae = 16, apply_b_dec_to_input = false }
expect_error(function()
  saefw.train { sae = narrow, buffer = nbuf, steps = 2, optimizer = saefw.plugin("sgd"), run_dir = false,
                progress = false, plugins = { saefw.plugin("anthropic_resample", { every = 1 }) } }
end, "plugin anthropic_resample: cannot resample a transcoder", "anthropic_resample on a transcoder")
saefw.train { sae = narrow, buffer = nbuf, steps = 2, optimizer = saefw.plugin("sgd"), run_dir = false,
              progress = false, plugins = { saefw.plugin("reinit_dead", { every = 1, threshold = 2, batches = 1 }) } }
-- Kaiming-uniform rows of W_dec [16, 64]: entries within sqrt(6 / 64), some beyond d_in's sqrt(6 / 256).
local nW, biggest = narrow:tensor("W_dec"), 0
for k = 1, 16 * 64 do
  assert(math.abs(nW[k]) <= math.sqrt(6 / 64), "transcoder W_dec entry " .. k .. " after reinit_dead: " .. nW[k])
  biggest = math.max(biggest, math.abs(nW[k]))
end
assert(biggest > math.sqrt(6 / 256), "transcoder W_dec after reinit_dead: bound of d_in, not d_out")
print("resamplers on a transcoder: ok")
-- The 2024 recipe's SAE trains through the loop (the trainer's schedules and clipping are its own options).
saefw.train { sae = s, source = src, batch_size = 16, steps = 3, optimizer = saefw.plugin("adam", { lr = 1e-3 }),
              run_dir = false, progress = false }
print("bad values refused with one line; relu_april trains: ok")
print("sae_variants.lua: all checks passed")
