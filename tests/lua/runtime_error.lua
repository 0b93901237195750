-- CLI test: a wrongly typed field passed to the engine on line 4.
local saefw = require "saefw"
local ok = 1
local sae = saefw.sae { d_in = "sixteen", d_sae = 64 }
