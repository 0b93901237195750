-- The researcher-facing Lua API (run from tests/ by ctest): 1-D tensor views written through
-- set(i, 1, v), wrong types in saefw.train{} reported at this file's line, load_sae refusing a
-- cfg.json without l1_coeff. Any failed check raises an error (non-zero exit).
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

print("api.lua: all checks passed")
