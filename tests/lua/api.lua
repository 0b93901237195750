-- The researcher-facing Lua API (run from tests/ by ctest): model:run against the PyTorch reference
-- in fixtures/model/reference.safetensors, 1-D tensor views written through set(i, 1, v), wrong
-- types in saefw.train{} reported at this file's line, load_sae refusing a cfg.json without
-- l1_coeff. Any failed check raises an error (non-zero exit).
local saefw = require "saefw"

local function expect_error(f, pattern, what)
  local ok, err = pcall(f)
  if ok then error(what .. ": no error", 0) end
  if not tostring(err):find(pattern) then error(string.format("%s: error '%s' lacks '%s'", what, tostring(err), pattern), 0) end
end

-- A 1-D tensor view: set(i, 1, v) writes v, get(i, 1) reads it, a second index other than 1 fails.
local seen = {}
local probe = saefw.lua_plugin {
  name = "probe",
  after_step = function(ctx)
    if ctx.step ~= 1 then return end
    local b = ctx:param("b_enc")
    b:set(2, 1, 0.625)
    seen.col = b:get(2)
    b:set(3, -1.5)
    seen.plain = b:get(3, 1)
    seen.bad = select(2, pcall(b.set, b, 1, 2, 1.0))
  end,
}
local sae = saefw.sae { d_in = 8, d_sae = 16, seed = 1 }
local src = saefw.synthetic { d_in = 8, n_features = 8 }
saefw.train { sae = sae, source = src, batch_size = 16, steps = 2, optimizer = saefw.plugin("sgd"),
              plugins = { probe }, run_dir = false, progress = false }
assert(seen.col == 0.625, "b_enc:set(2, 1, 0.625) wrote " .. tostring(seen.col))
assert(seen.plain == -1.5, "b_enc:get(3, 1) read " .. tostring(seen.plain))
assert(tostring(seen.bad):find("second index must be 1"), "set(1, 2, v) on 1-D: " .. tostring(seen.bad))
print("1-D view set(i, 1, v) writes v: ok")

-- Wrong types in saefw.train{} point at the caller's line, never into init.lua.
local base = function(extra)
  local t = { sae = sae, source = src, batch_size = 16, steps = 2, optimizer = saefw.plugin("sgd"), run_dir = false }
  for k, v in pairs(extra) do t[k] = v end
  return t
end
for _, case in ipairs {
  { { batch_size = "x" }, "field 'batch_size' must be a number, got string" },
  { { steps = nil, num_tokens = {} }, "field 'num_tokens' must be a number, got table" },
  { { buffer_size = "big" }, "field 'buffer_size' must be a number" },
  { { config = 3 }, "field 'config' must be a table, got number" },
  { { on_log = "f" }, "field 'on_log' must be a function, got string" },
  { { resume = 1 }, "field 'resume' must be a string, got number" },
} do
  local t = base(case[1])
  if case[1].num_tokens then t.steps = nil end
  local line = debug.getinfo(1, "l").currentline + 1
  expect_error(function() saefw.train(t) end, "api%.lua:" .. line .. ": saefw%.train: " .. case[2]:gsub("%p", "%%%0"),
               "train " .. next(case[1]))
end
expect_error(function() saefw.buffer { model = saefw.model("tiny-1l"), tokens = "x", batch_size = 4 } end,
             "api%.lua:%d+: saefw%.buffer: field 'tokens' must be tokens", "buffer tokens")
print("saefw.train{} type errors at the user's line: ok")

-- load_sae: a cfg.json without l1_coeff is refused, naming the file; a non-numeric one too.
local dir = os.getenv("SAEFW_TEST_TMP") or "/tmp"
os.execute("rm -rf '" .. dir .. "/api_ck'")
saefw.sae { d_in = 4, d_sae = 8, l1_coeff = 2e-3 }:save(dir .. "/api_ck")
local s2, cfg = saefw.load_sae(dir .. "/api_ck")
assert(math.abs(s2.l1_coeff - 2e-3) < 1e-9 and cfg.l1_coeff, "load_sae l1_coeff " .. tostring(s2.l1_coeff))
local function rewrite_cfg(f)
  local fh = assert(io.open(dir .. "/api_ck/cfg.json"))
  local text = fh:read("a")
  fh:close()
  fh = assert(io.open(dir .. "/api_ck/cfg.json", "w"))
  fh:write(f(text))
  fh:close()
end
rewrite_cfg(function(t) return (t:gsub('"l1_coeff"%s*:%s*[-%deE.+]+%s*,?', "")) end)
expect_error(function() saefw.load_sae(dir .. "/api_ck") end, "api_ck/cfg%.json: no l1_coeff", "cfg without l1_coeff")
rewrite_cfg(function(t) return (t:gsub("{", '{"l1_coeff": "big",', 1)) end)
expect_error(function() saefw.load_sae(dir .. "/api_ck") end, "api_ck/cfg%.json: l1_coeff must be a number",
             "non-numeric l1_coeff")
print("load_sae refuses a cfg.json without a numeric l1_coeff: ok")

-- enc_dtype: the SAE's products' precision, kept through save and load_sae; a wrong name is refused.
os.execute("rm -rf '" .. dir .. "/api_bf16'")
local sb = saefw.sae { d_in = 4, d_sae = 8, enc_dtype = "bf16" }
assert(sb.enc_dtype == "bf16" and saefw.sae { d_in = 4, d_sae = 8 }.enc_dtype == "fp32", "enc_dtype field")
sb:save(dir .. "/api_bf16")
assert(saefw.load_sae(dir .. "/api_bf16").enc_dtype == "bf16", "enc_dtype after load_sae")
expect_error(function() saefw.sae { d_in = 4, d_sae = 8, enc_dtype = "int8" } end,
             "saefw%.sae: field enc_dtype must be \"fp32\", \"bf16\" or \"fp16\" %(got 'int8'%)", "bad enc_dtype")
print("enc_dtype through saefw.sae, save and load_sae: ok")

-- model:run: activations of given tokens at any hook site, logits and loss, against the float64
-- reference (read here from the safetensors file by hand), within the C test's 1e-4.
local function read_reference(path)
  local fh = assert(io.open(path, "rb"))
  local blob = fh:read("a")
  fh:close()
  local n = string.unpack("<I8", blob)
  local header = blob:sub(9, 8 + n)
  local function tensor(name)
    local dtype, shape, a, b = header:match('"' .. name:gsub("%p", "%%%0") ..
      '":{"dtype":"(%w+)","shape":%[([%d,]*)%],"data_offsets":%[(%d+),(%d+)%]')
    assert(dtype, "reference lacks " .. name)
    local dims = {}
    for d in shape:gmatch("%d+") do dims[#dims + 1] = tonumber(d) end
    local fmt = dtype == "F32" and "<f" or "<i4"
    local vals, pos = {}, 9 + n + tonumber(a)
    for i = 1, (tonumber(b) - tonumber(a)) // 4 do vals[i], pos = string.unpack(fmt, blob, pos) end
    return vals, dims
  end
  return tensor, header
end
local ref, ref_header = read_reference("fixtures/model/reference.safetensors")
local toks, tdims = ref("tokens")
local rows = {}
for b = 1, tdims[1] do
  rows[b] = {}
  for t = 1, tdims[2] do rows[b][t] = toks[(b - 1) * tdims[2] + t] end
end
local model = saefw.model("fixtures/model/model.pth")
local sites = { "blocks.0.mlp.hook_post", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.0.mlp.hook_pre",
                "blocks.1.ln2.hook_normalized", "ln_final.hook_normalized", "blocks.1.hook_resid_post", "logits" }
local asked = { "loss", "post" }
for _, site in ipairs(sites) do asked[#asked + 1] = site end
local out = model:run(rows, { sites = asked })
local maxdiff = 0
for _, site in ipairs(sites) do
  local want, dims = ref(site)
  local t = out[site]
  assert(t and t.ndim == #dims, site .. ": missing or of the wrong rank")
  for d = 1, #dims do assert(t.shape[d] == dims[d], site .. ": shape differs from the reference") end
  local flat = {}
  local function walk(x) if type(x) == "table" then for _, y in ipairs(x) do walk(y) end else flat[#flat + 1] = x end end
  walk(t:to_table())
  assert(#flat == #want, site .. ": to_table has " .. #flat .. " values, expected " .. #want)
  for i = 1, #want do
    local d = math.abs(flat[i] - want[i])
    if not (d <= 1e-4) then error(string.format("%s: value %d is %.7g, reference %.7g", site, i, flat[i], want[i]), 0) end
    if d > maxdiff then maxdiff = d end
  end
end
local want_loss = tonumber(ref_header:match('"loss":"([^"]+)"'))
assert(math.abs(out.loss - want_loss) <= 1e-5 * want_loss, string.format("loss %.9g vs %.9g", out.loss, want_loss))
assert(out.post == out["blocks.0.mlp.hook_post"], "a short name gives the same tensor as its full name")
local p = out["blocks.1.attn.hook_pattern"]
assert(p:get(2, 3, 1, 2) == 0 and math.abs(p:get(2, 3, 1, 1) - 1) < 1e-6, "pattern row 1 is causal")
print(string.format("model:run: %d sites, logits and loss match the reference (max |diff| %.3e, loss %.6f)",
                    #sites, maxdiff, out.loss))

-- One row as a flat list, rows of a tokens object and the same ids as a table give the same values
-- (to float rounding: a batch of another size takes other sgemm blocks).
local function near(a, b) return math.abs(a - b) <= 1e-5 * (1 + math.abs(b)) end
local one = model:run(rows[2], { sites = { "blocks.0.hook_resid_mid" } })["blocks.0.hook_resid_mid"]
local two = model:run(rows, { sites = { "blocks.0.hook_resid_mid" } })["blocks.0.hook_resid_mid"]
assert(one.shape[1] == 1 and near(one:get(1, 5, 7), two:get(2, 5, 7)), "a flat list is one row")
local tokfile = dir .. "/api_tokens.bin"
local fh = assert(io.open(tokfile, "wb"))
for _, v in ipairs(toks) do fh:write(string.pack("<i4", v)) end
fh:close()
local tk = saefw.tokens(tokfile, { seq_len = tdims[2], dtype = "int32", shuffle = false })
local three = model:run(tk, { sites = { "mlp_out" }, layer = 1, rows = { 3, 1 } })["blocks.1.hook_mlp_out"]
local ref_mlp = model:run(rows, { sites = { "blocks.1.hook_mlp_out" } })["blocks.1.hook_mlp_out"]
for j = 1, 32 do
  assert(near(three:get(1, 4, j), ref_mlp:get(3, 4, j)) and near(three:get(2, 4, j), ref_mlp:get(1, 4, j)), "tokens rows")
end
expect_error(function() model:run(rows, { sites = { "blocks.0.mlp.hook_middle" } }) end, "api%.lua:%d+: model:run: sites%[1%]: unknown hook site", "bad site")
expect_error(function() model:run({ 1, 2, 99 }, { sites = { "logits" } }) end, "token %[3%] must be an id from 0 to 49", "bad id")
expect_error(function() model:run(tk, { sites = { "post" } }) end, "field 'rows'", "tokens without rows")
expect_error(function() out.logits:get(1, 1) end, "expected 3 indices", "get with too few indices")
print("model:run on a flat list, rows and tokens; errors name the argument: ok")

-- An ordered feed: two steps on batches from a Lua function give bit-identical weights to the same
-- batches from a file read with shuffle = false, and other weights with the batches swapped.
local D, BATCH = 8, 16
local batches = {}
for b = 1, 2 do
  batches[b] = {}
  for r = 1, BATCH do
    local row = {}
    for i = 1, D do row[i] = math.sin(b * 1.7 + r * 0.37 + i * 1.3) * (1 + (r % 3)) end
    batches[b][r] = row
  end
end
local function train_on(src)
  local s = saefw.sae { d_in = D, d_sae = 32, seed = 3, l1_coeff = 1e-3 }
  saefw.train { sae = s, source = src, batch_size = BATCH, steps = 2, optimizer = saefw.plugin("adam", { lr = 1e-2 }),
                run_dir = false, progress = false, log_every = 1 }
  return s
end
local function feed_of(order)
  local calls = {}
  local src = saefw.feed { d_in = D, fn = function(n)
    calls[#calls + 1] = n
    return batches[order[#calls]]
  end }
  return src, calls
end
local fsrc, calls = feed_of { 1, 2 }
local fed = train_on(fsrc)
assert(#calls == 2 and calls[1] == BATCH and calls[2] == BATCH, "the feed was called " .. #calls .. " times")
local npy = dir .. "/api_acts.npy"
fh = assert(io.open(npy, "wb"))
local hdr = string.format("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", 2 * BATCH, D)
hdr = hdr .. string.rep(" ", 63 - (10 + #hdr) % 64) .. "\n"
fh:write("\x93NUMPY\x01\x00", string.pack("<I2", #hdr), hdr)
for b = 1, 2 do for r = 1, BATCH do for i = 1, D do fh:write(string.pack("<f", batches[b][r][i])) end end end
fh:close()
local from_file = train_on(saefw.activations { path = npy, shuffle = false })
local swapped = train_on((feed_of { 2, 1 }))
local same, differs = true, false
for _, name in ipairs { "W_enc", "W_dec", "b_enc", "b_dec" } do
  local a, b, c = fed:tensor(name), from_file:tensor(name), swapped:tensor(name)
  for i = 1, #a do
    if a[i] ~= b[i] then same = false end
    if a[i] ~= c[i] then differs = true end
  end
end
assert(same, "two steps on fed batches differ from the same batches read in order from a file")
assert(differs, "the batches' order made no difference")
-- Evaluation (here at step 0 and at the end) reads the fed rows again and never calls the function.
local esrc, ecalls = feed_of { 1, 2 }
local with_eval = saefw.sae { d_in = D, d_sae = 32, seed = 3, l1_coeff = 1e-3 }
saefw.train { sae = with_eval, source = esrc, batch_size = BATCH, steps = 2, optimizer = saefw.plugin("adam", { lr = 1e-2 }),
              run_dir = false, progress = false, eval_every = 1, log_every = 1 }
assert(#ecalls == 2, "evaluation called the feed: " .. #ecalls .. " calls")
local a, b = with_eval:tensor("W_enc"), fed:tensor("W_enc")
for i = 1, #a do assert(a[i] == b[i], "evaluation changed the training") end
expect_error(function()
  saefw.train { sae = saefw.sae { d_in = D, d_sae = 32 }, source = saefw.feed { d_in = D, fn = function() return { 1, 2 } end },
                batch_size = BATCH, steps = 1, optimizer = saefw.plugin("sgd"), run_dir = false, progress = false, eval_every = 0 }
end, "asked for 16 rows of 8, the function returned 2 numbers", "feed of the wrong size")
print("ordered feed: fed batches == the same batches from a file in order, bit for bit: ok")

-- A Lua plugin reaches what a C plugin reaches: the batch (here the fed rows, known exactly), the
-- SAE's activations and feature counts on it, frequencies, optimizer-state reset, the learning rate
-- and the L1 coefficient.
local got = {}
local reach = saefw.lua_plugin {
  name = "reach", stateless = true,
  after_backward = function(ctx)
    if ctx.step ~= 1 then return end
    local x = ctx:batch_inputs()
    got.inputs_ok = x.shape[1] == BATCH and x.shape[2] == D
    for r = 1, BATCH do for i = 1, D do
      if math.abs(x:get(r, i) - batches[2][r][i]) > 1e-6 then got.inputs_ok = false end
    end end
    local acts, counts = ctx:batch_acts(), ctx:feature_counts()
    got.counts_ok = acts.shape[2] == 32 and #counts == 32
    for j = 1, 32 do
      local n = 0
      for r = 1, BATCH do if acts:get(r, j) > 0 then n = n + 1 end end
      if n ~= counts[j] then got.counts_ok = false end
    end
    local freq = ctx:frequencies(1)
    got.freq_ok = freq.shape[1] == 32
    for j = 1, 32 do
      if math.abs(freq:get(j) - counts[j] / BATCH) > 1e-6 then got.freq_ok = false end
    end
    ctx:reset_optimizer_state("W_enc", 2, { 1, 3 })
    ctx:reset_optimizer_state()
    got.bad_reset = select(2, pcall(ctx.reset_optimizer_state, ctx, "W_nope"))
    ctx:set_lr(0)
    got.lr = ctx.lr
    ctx:set_loss_coeff("l1", 0.5)
    got.l1 = ctx:loss_coeff("l1")
  end,
  after_step = function(ctx)
    local w = ctx:param("W_enc")
    got[ctx.step] = w:get(2, 5)
  end,
}
local rsrc = feed_of { 1, 2 }
saefw.train { sae = saefw.sae { d_in = D, d_sae = 32, seed = 3 }, source = rsrc, batch_size = BATCH, steps = 2,
              optimizer = saefw.plugin("adam", { lr = 1e-2 }), plugins = { reach }, run_dir = false, progress = false }
assert(got.inputs_ok, "ctx:batch_inputs() is not the fed batch")
assert(got.counts_ok, "ctx:feature_counts() disagrees with ctx:batch_acts()")
assert(got.freq_ok, "ctx:frequencies(1) on the fed rows disagrees with the counts")
assert(tostring(got.bad_reset):find("no tensor named 'W_nope'"), tostring(got.bad_reset))
assert(got.lr == 0 and got[1] == got[0], "ctx:set_lr(0) did not stop the update")
assert(got.l1 == 0.5, "ctx:set_loss_coeff")
print("Lua plugin context: batch, activations, counts, frequencies, reset, lr, L1 coefficient: ok")

-- Saved state: a Lua plugin's save_state / load_state go into checkpoints and come back on resume.
local seen_state, seen_end, crash_at
local function counter()
  local count, history = 0, {}
  return saefw.lua_plugin {
    name = "counter",
    after_step = function(ctx)
      if ctx.step == crash_at then error("killed at step " .. ctx.step) end
      count = count + 1; history[#history + 1] = ctx.step * 0.5
    end,
    on_end = function() seen_end = count end,
    save_state = function(ctx, state) state:put("count", count); state:put("history", history) end,
    load_state = function(ctx, state)
      count, history = state:get("count"), state:get("history")
      seen_state = { count = count, n = #history, last = history[#history] }
    end,
  }
end
local rdir = dir .. "/api_resume"
os.execute("rm -rf '" .. rdir .. "'")
local function counted_run(steps, resume)
  saefw.train { sae = saefw.sae { d_in = D, d_sae = 32, seed = 3 }, source = saefw.synthetic { d_in = D, n_features = 8 },
                batch_size = BATCH, steps = steps, optimizer = saefw.plugin("sgd"), plugins = { counter() },
                run_dir = rdir, resume = resume, checkpoint_every = 2, progress = false, eval_every = 0 }
end
-- The first run dies at step 3 (a finished run cannot be resumed), after its checkpoint at 2 steps.
crash_at = 3
assert(not pcall(counted_run, 6))
crash_at = nil
counted_run(6, rdir)
-- The newest numbered checkpoint is after 2 steps (0-based steps 0 and 1); the resumed run does
-- steps 2 to 5 on top of the restored count.
assert(seen_state and seen_state.count == 2 and seen_state.n == 2 and seen_state.last == 0.5,
       "load_state did not get what save_state put")
assert(seen_end == 6, "after resuming, the count is " .. tostring(seen_end))
expect_error(function() saefw.lua_plugin { name = "x", after_step = print, save_state = print } end,
             "give both save_state and load_state", "save_state alone")
print(string.format("Lua plugin state: saved in a checkpoint, loaded on resume (count %d, %d entries, %d at the end): ok",
                    seen_state.count, seen_state.n, seen_end))

-- model:to_tokens / to_str_tokens through the model's tokenizer (tiny-1l's bytes, BOS 256 first).
local tiny = saefw.model("tiny-1l")
local ids = tiny:to_tokens("hé")
assert(#ids == 4 and ids[1] == 256 and ids[2] == 104 and ids[3] == 195 and ids[4] == 169, "to_tokens")
assert(#tiny:to_tokens("hé", { bos = false }) == 3, "to_tokens without BOS")
assert(tiny:to_str_tokens({ 104, 105 })[2] == "i", "to_str_tokens")
local tout = tiny:run(tiny:to_tokens("hello world"), { sites = { "post", "loss" } })
assert(tout.post.shape[1] == 1 and tout.post.shape[2] == 12 and tout.loss > 0, "run on to_tokens")
print(string.format("model:to_tokens / to_str_tokens on tiny-1l; run on them: loss %.4f: ok", tout.loss))

print("api.lua: all checks passed")
