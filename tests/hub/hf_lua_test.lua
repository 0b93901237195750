-- saefw.hf from Lua: upload a checkpoint folder (--ckpt DIR), download a file back, and check that
-- misuse raises errors naming the bad argument. Run by test_hub.py through `saefw run`.
local hf = require "saefw.hf"
local dir = require("saefw").config { ckpt = "" }.ckpt
assert(dir ~= "", "usage: saefw run hf_lua_test.lua --ckpt CHECKPOINT_DIR")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local url = hf.upload { dir = dir, repo = "alice/lua-sae", create = true, message = "from lua" }
assert(type(url) == "string" and url:find("/alice/lua%-sae/commit/%x+$"), "upload returned " .. tostring(url))

local path = hf.download { repo = "alice/lua-sae", files = { "cfg.json" } }
assert(read(path) == read(dir .. "/cfg.json"), "downloaded cfg.json differs")
local one = hf.download { repo = "alice/lua-sae", files = "cfg.json", revision = "main" }
assert(one == path, "files as a string")
local snap = hf.download { repo = "alice/lua-sae" }
assert(read(snap .. "/sae_weights.safetensors") == read(dir .. "/sae_weights.safetensors"), "snapshot download")

local function fails(fn, args, needle)
  local ok, err = pcall(fn, args)
  assert(not ok, "expected an error mentioning " .. needle)
  assert(tostring(err):find(needle, 1, true), "error '" .. tostring(err) .. "' does not mention " .. needle)
end

fails(hf.upload, { repo = "alice/x" }, "'dir'")
fails(hf.upload, { dir = 42, repo = "alice/x" }, "'dir'")
fails(hf.upload, { dir = dir }, "'repo'")
fails(hf.upload, { dir = dir, repo = "alice/x", create = "yes" }, "'create'")
fails(hf.upload, { dir = dir, repo = "alice/x", privat = true }, "'privat'")
fails(hf.upload, { dir = dir, repo = "alice/x", private = true }, "'private'")
fails(hf.upload, "not a table", "table expected")
fails(hf.upload, { dir = dir, repo = "a/b/c" }, "bad repo id")
fails(hf.download, { repo = "alice/lua-sae", files = { "cfg.json", 7 } }, "'files'")
fails(hf.download, { repo = "alice/lua-sae", files = 7 }, "'files'")
fails(hf.download, { files = { "cfg.json" } }, "'repo'")
fails(hf.download, { repo = "alice/lua-sae", files = { "nope.bin" } }, "404")

print("lua ok")
