-- saefw.tokenizer from Lua (run from tests/ by ctest): encode / decode / to_str_tokens and fields on
-- GPT-2 and the bundled tiny-1l, ids as Hugging Face's JavaScript tokenizers give them; errors.
local saefw = require "saefw"
local function eq(a, b, what)
  if #a ~= #b then error(string.format("%s: %d ids, expected %d", what, #a, #b), 0) end
  for i = 1, #a do
    if a[i] ~= b[i] then error(string.format("%s: id %d is %s, expected %s", what, i, tostring(a[i]), tostring(b[i])), 0) end
  end
end
local tok = saefw.tokenizer("fixtures/tokenizer/gpt2.json")
assert(tok.vocab_size == 50257 and tok.bos == 50256 and tok.eos == 50256 and tok.add_bos == false)
local text = "Hello world<|endoftext|> 123"
eq(tok:encode(text), { 15496, 995, 27, 91, 437, 1659, 5239, 91, 29, 17031 }, "plain")
eq(tok:encode(text, { special = true, bos = true }), { 50256, 15496, 995, 50256, 17031 }, "special")
assert(tok:decode(tok:encode(text)) == text)
eq(tok:to_str_tokens("Hello, world"), { "Hello", ",", " world" }, "to_str_tokens")
eq(tok:to_str_tokens({ 15496, 11 }), { "Hello", "," }, "to_str_tokens of ids")
eq(tok:to_str_tokens(" 世"), { " ", "\u{FFFD}", "\u{FFFD}" }, "partial characters")
local tiny = saefw.tokenizer("tiny-1l")
assert(tiny.vocab_size == 257 and tiny.bos == 256 and tiny.add_bos == true)
eq(tiny:encode("hé", { bos = true }), { 256, 104, 195, 169 }, "tiny-1l")
local ok, err = pcall(tok.decode, tok, { 1, 99999 })
assert(not ok and err:find("ids%[2%] is not a token id"), err)
ok, err = pcall(tok.encode, tok, "x", { specials = true })
assert(not ok and err:find("specials"), err)
ok, err = pcall(saefw.tokenizer, "no/such-repo")
assert(not ok and err:find("saefw download no/such%-repo tokenizer.json"), err)
print("tokenizer.lua: all checks passed")
