-- saefw: the Lua library experiments use (require "saefw"). It wraps the engine's C core with
-- defaults, config merging with command-line overrides, and argument checks that name the field.
local core = require "saefw.core"

local M = {}
M.version = core.version

local function fail(msg)
  error(core.where() .. msg, 0)
end

-- A field of the wrong type fails at the user's line, before any arithmetic on it here would fail
-- inside this file. types: "number", "string", ... or a list of them.
local function check_field(fn, t, key, types)
  local v = t[key]
  if v == nil then return end
  if type(types) == "string" then types = { types } end
  for _, ty in ipairs(types) do
    if type(v) == ty then return end
  end
  fail(string.format("%s: field '%s' must be a %s, got %s", fn, key, table.concat(types, " or "), type(v)))
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return ks
end

--- saefw.config{defaults}: a copy of the defaults with the command line's --key value applied.
-- An unknown key is an error listing the valid keys; a value of the wrong type names the key. The
-- run object applies them (saefw_run_apply_overrides in engine/run.h).
M.config = core.config

M.sae = core.sae
M.load_sae = core.load_sae
M.plugin = core.plugin
M.synthetic = core.synthetic
M.activations = core.activations
M.feed = core.feed
M.frequencies = core.frequencies
M.mmcs = core.mmcs
M.evaluate = core.evaluate
M.info = core.info
M.plugin_dirs = core.plugin_dirs
M.lua_plugin = core.lua_plugin
M.model = core.model
M.tokenizer = core.tokenizer
M.tokens = core.tokens
M.model_source = core.model_source
M.recons_score = core.recons_score
M.model_loss = core.model_loss
M.hook_name = core.hook_name
M.data_dir = core.data_dir
M.save_tensor = core.save_tensor
M.find_resumable = core.find_resumable
M.threads = core.threads
M.memory_policy = core.memory_policy
M.features = core.features

-- model:to_tokens(text [, {bos=, special=}]) -> ids and model:to_str_tokens(text or ids) -> strings,
-- through the model's tokenizer (saefw.tokenizer(model.name)); bos defaults to true when the
-- tokenizer has a BOS token, as TransformerLens's prepend_bos. The ids go straight to model:run.
do
  local Model = debug.getregistry()["saefw.Model"]
  local tokenizers = setmetatable({}, { __mode = "k" })
  local function tokenizer_of(m)
    local t = tokenizers[m]
    if not t then
      t = core.tokenizer(m.name)
      tokenizers[m] = t
    end
    return t
  end
  Model.methods.to_tokens = function(m, text, opts)
    if type(text) ~= "string" then fail("model:to_tokens: expected a string, got " .. type(text)) end
    if opts ~= nil and type(opts) ~= "table" then fail("model:to_tokens: options must be a table") end
    local tok = tokenizer_of(m)
    local o = { special = opts and opts.special, bos = opts and opts.bos }
    if o.bos == nil then o.bos = tok.bos ~= nil end
    return tok:encode(text, o)
  end
  Model.methods.to_str_tokens = function(m, x) return tokenizer_of(m):to_str_tokens(x) end
end

-- The model a buffer reads from, by name: the run object adds it to cfg.json (SAELens's model_name,
-- with hook_name, context_size, ... that it takes from the buffer itself).
local buffer_info = setmetatable({}, { __mode = "k" })

--- saefw.buffer{...}: the seed's shuffling activation buffer, over a source or over the model host:
--   saefw.buffer { source = src, size = rows, batch_size = 4096, dtype = "bf16" }
--   saefw.buffer { model = m, tokens = t, site = "post", layer = 0, size = rows, batch_size = 4096,
--                  model_batch_size = batch_size // seq_len * 16 (the seed's), dtype = "bf16" }
--   (a transcoder's data: site_out = "mlp_out", layer_out = ...; rows are [site | site_out])
function M.buffer(t)
  if type(t) ~= "table" then fail("saefw.buffer: expected a table of options") end
  if t.model == nil then return core.buffer(t) end
  for k in pairs(t) do
    if not ({ model = 1, tokens = 1, site = 1, layer = 1, size = 1, batch_size = 1, model_batch_size = 1,
              dtype = 1, seed = 1, site_out = 1, layer_out = 1 })[k] then
      fail(string.format("saefw.buffer: unknown option '%s'", tostring(k)))
    end
  end
  if t.tokens == nil then fail("saefw.buffer: field 'tokens' is required with 'model'") end
  if type(t.tokens) ~= "userdata" then
    fail(string.format("saefw.buffer: field 'tokens' must be tokens (saefw.tokens), got %s", type(t.tokens)))
  end
  if t.batch_size == nil then fail("saefw.buffer: field 'batch_size' is required") end
  check_field("saefw.buffer", t, "batch_size", "number")
  check_field("saefw.buffer", t, "model_batch_size", "number")
  -- The seed's model batch unless given (saefw_run_model_batch in engine/run.h).
  local mbs = t.model_batch_size or core.model_batch(t.batch_size, t.tokens.seq_len)
  local src = core.model_source { model = t.model, tokens = t.tokens, site = t.site, layer = t.layer,
                                  model_batch_size = mbs, seed = t.seed, site_out = t.site_out,
                                  layer_out = t.layer_out }
  local buf = core.buffer { source = src, size = t.size, batch_size = t.batch_size, dtype = t.dtype, seed = t.seed }
  buffer_info[buf] = { model_name = t.model.name }
  return buf
end

local TRAIN_KEYS = {
  sae = true, buffer = true, source = true, eval_source = true, steps = true, num_tokens = true,
  batch_size = true, buffer_size = true, buffer_dtype = true, optimizer = true, plugins = true,
  log_every = true, eval_every = true, checkpoint_every = true, freq_batches = true, run_dir = true,
  config = true, seed = true, progress = true, on_log = true, on_eval = true, on_end = true,
  recons_batches = true, resume = true, allow_change = true, threads = true, allow_memory = true,
  memory_limit = true, recons_eval = true, clip_grad_norm = true, unit_norm_decoder = true, saes = true,
  zero = true, eval_freq = true,
}

local function script_name()
  return arg and arg[0] or nil
end

--- saefw.default_run_dir(): runs/<script>-<date>-<time>, unique per second.
function M.default_run_dir()
  return core.default_run_dir(script_name())
end

--- saefw.train{...}: run the training loop in C.
-- sae, optimizer (a plugin), and either buffer or source (then batch_size, buffer_size) are needed;
-- steps or num_tokens sets the length. Returns the final metrics (with .checkpoint).
-- saes = { {sae=, optimizer=, plugins=, name=}, ... } instead of sae, optimizer and plugins trains
-- them all on the same batches (each in <run folder>/<name>/) and returns a list of their results.
function M.train(t)
  if type(t) ~= "table" then fail("saefw.train: expected a table of options") end
  for k in pairs(t) do
    if not TRAIN_KEYS[k] then
      fail(string.format("saefw.train: unknown option '%s' (valid: %s)", tostring(k), table.concat(sorted_keys(TRAIN_KEYS), ", ")))
    end
  end
  for _, k in ipairs { "steps", "num_tokens", "batch_size", "buffer_size", "seed", "threads" } do
    check_field("saefw.train", t, k, "number")
  end
  check_field("saefw.train", t, "buffer_dtype", "string")
  check_field("saefw.train", t, "config", "table")
  check_field("saefw.train", t, "run_dir", { "string", "boolean" })
  check_field("saefw.train", t, "resume", "string")
  check_field("saefw.train", t, "clip_grad_norm", "number")
  check_field("saefw.train", t, "unit_norm_decoder", "boolean")
  check_field("saefw.train", t, "zero", "number")
  for _, k in ipairs { "on_log", "on_eval", "on_end" } do check_field("saefw.train", t, k, "function") end
  -- threads: for this run and after it, as saefw.threads(n) (0: the default, all cores).
  if t.threads ~= nil then core.threads(t.threads) end
  -- allow_memory = true: run whatever the memory estimate says; memory_limit = "8G": the estimate is
  -- checked against that instead of the machine's available memory (also --allow-memory, --memory-limit).
  if t.allow_memory ~= nil or t.memory_limit ~= nil then core.memory_policy(t.allow_memory == true, t.memory_limit) end
  local buffer = t.buffer
  if not buffer then
    if not t.source then fail("saefw.train: give 'buffer' or 'source'") end
    if not t.batch_size then fail("saefw.train: 'batch_size' is required with 'source'") end
    buffer = M.buffer { source = t.source, batch_size = t.batch_size,
                           size = t.buffer_size or t.batch_size * 16, dtype = t.buffer_dtype, seed = t.seed }
  end
  -- Resuming (resume = DIR, or saefw run ... --resume DIR, which the run object takes from the core):
  -- the same run folder, from its newest intact checkpoint, which the engine picks once it holds the
  -- folder's lock. A change to the recorded configuration must be named (allow_change = {KEY, ...},
  -- or --allow-change KEY).
  local allow_change = {}
  if t.allow_change ~= nil then
    if type(t.allow_change) ~= "table" then fail("saefw.train: field 'allow_change' must be a list of names") end
    for _, k in ipairs(t.allow_change) do allow_change[#allow_change + 1] = k end
  end
  -- The run object (engine/run.h) derives the rest: steps from num_tokens, the run folder, the
  -- evaluators, and cfg.json's model fields from what the buffer reads.
  local info = buffer_info[buffer]
  return core.train {
    sae = t.sae, saes = t.saes, buffer = buffer, eval_source = t.eval_source, steps = t.steps, num_tokens = t.num_tokens,
    optimizer = t.optimizer, plugins = t.plugins, log_every = t.log_every, eval_every = t.eval_every,
    checkpoint_every = t.checkpoint_every, freq_batches = t.freq_batches, run_dir = t.run_dir,
    script = script_name(), model_name = info and info.model_name, config = t.config, seed = t.seed,
    progress = t.progress, recons_batches = t.recons_batches, recons_eval = t.recons_eval, resume = t.resume,
    allow_change = allow_change, clip_grad_norm = t.clip_grad_norm, unit_norm_decoder = t.unit_norm_decoder,
    on_log = t.on_log, on_eval = t.on_eval, on_end = t.on_end, zero = t.zero, eval_freq = t.eval_freq,
  }
end

return M
