-- saefw.sweep's frontier, table and SVG on made-up results: the frontier flags, the order, rows
-- without an L0 (NaN) kept in the table but not drawn, every point drawn and labelled, the axes named.
local sweep = require "saefw.sweep"
local out = os.getenv("SAEFW_TEST_TMP") or "."
local function check(cond, msg)
  if not cond then error("sweep_frontier: " .. msg, 0) end
end
local res = { { name = "a", l0 = 32.9, recons_score = 0.29, explained_variance = 0.39, dead = 0 },
              { name = "b", l0 = 175.6, recons_score = 0.67 }, { name = "c", l0 = 347.6, recons_score = 0.81 },
              { name = "d", l0 = 200, recons_score = 0.5 }, { name = "e", l0 = 0 / 0, recons_score = 0.9 } }
local rows = sweep.frontier(res, { 1.6e-3, 4e-4, 1e-4, 3e-4, 5e-5 })
local order = {}
for i, r in ipairs(rows) do order[i] = r.name .. (r.frontier and "*" or "") end
check(table.concat(order, " ") == "a* b* d c* e", "rows/frontier: " .. table.concat(order, " "))
local text = sweep.table(rows, "l1_coeff")
print(text)
check(text:match("l1_coeff") and text:match("\nd%s+0.0003%s+200.00%s+0.5000"), "the table's row of d")
check(select(2, text:gsub("\n", "")) == 5, "one line per row and a heading")
local path = out .. "/frontier.svg"
local n = sweep.write_svg(path, rows, { title = "test <sweep>" })
check(n == 4, "points drawn: " .. n)
local f = assert(io.open(path))
local svg = f:read("a")
f:close()
check(select(2, svg:gsub("<circle", "")) == 4, "a circle per point")
for _, name in ipairs { "a", "b", "c", "d" } do check(svg:match(">" .. name .. "</text>"), "label of " .. name) end
check(svg:match("L0 %(active features per token, log scale%)"), "x axis label")
check(svg:match("reconstruction score"), "y axis label")
check(svg:match("test &lt;sweep&gt;"), "escaped title")
check(svg:match("<polyline"), "frontier line")
-- Without a reconstruction score (synthetic data) the explained variance is plotted.
local rows2 = sweep.frontier({ { name = "x", l0 = 3, explained_variance = 0.5 }, { name = "y", l0 = 5, explained_variance = 0.7 } })
check(sweep.write_svg(out .. "/ev.svg", rows2) == 2 and rows2[1].y_name == "explained_variance", "explained variance fallback")
print("sweep_frontier: all checks passed")
