-- Sweeps: the sparsity / reconstruction frontier of SAEs trained side by side (saefw.train{ saes = ... }),
-- as a text table and an SVG plot (L0 against the reconstruction score, every SAE a labelled point,
-- the Pareto frontier joined by a line).
local M = {}

local function num(v)
  return type(v) == "number" and v == v and v or nil -- NaN and missing alike
end

--- The frontier rows of a list of results (saefw.train{ saes = ... }'s return, or tables with name,
-- l0, recons_score, explained_variance, dead) and the swept values (values[i] for results[i], may be
-- nil). Sorted by L0; y is the reconstruction score, or the explained variance where a result has
-- none (synthetic data). A row is on the frontier when no other row has an L0 as low and a y as high,
-- one of them strictly.
function M.frontier(results, values)
  local rows = {}
  for i, r in ipairs(results) do
    local y, y_name = num(r.recons_score), "recons_score"
    if not y then y, y_name = num(r.explained_variance), "explained_variance" end
    rows[#rows + 1] = { name = r.name or ("sae" .. i), value = values and values[i], l0 = num(r.l0), y = y,
                        y_name = y_name, recons_score = num(r.recons_score),
                        explained_variance = num(r.explained_variance), dead = num(r.dead) }
  end
  table.sort(rows, function(a, b)
    if (a.l0 or math.huge) ~= (b.l0 or math.huge) then return (a.l0 or math.huge) < (b.l0 or math.huge) end
    return a.name < b.name
  end)
  for _, a in ipairs(rows) do
    a.frontier = a.l0 ~= nil and a.y ~= nil
    for _, b in ipairs(rows) do
      if a.frontier and b ~= a and b.l0 and b.y and b.l0 <= a.l0 and b.y >= a.y and (b.l0 < a.l0 or b.y > a.y) then
        a.frontier = false
      end
    end
  end
  return rows
end

local function fmt(v, f)
  return v and string.format(f, v) or "-"
end

--- The rows as a text table: name, the swept value (column `param`), L0, reconstruction score,
-- explained variance, dead fraction, and a * for the frontier.
function M.table(rows, param)
  local lines = { string.format("%-24s %12s %9s %12s %10s %8s %s", "sae", param or "value", "L0", "recons_score",
                                "expl_var", "dead", "frontier") }
  for _, r in ipairs(rows) do
    lines[#lines + 1] = string.format("%-24s %12s %9s %12s %10s %8s %s", r.name, r.value and string.format("%g", r.value) or "-",
                                      fmt(r.l0, "%.2f"), fmt(r.recons_score, "%.4f"), fmt(r.explained_variance, "%.4f"),
                                      fmt(r.dead, "%.4f"), r.frontier and "*" or "")
  end
  return table.concat(lines, "\n")
end

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

-- Ticks at 1, 2, 5 x 10^k covering [lo, hi].
local function nice_ticks(lo, hi, n)
  local span = hi - lo
  if span <= 0 then return { lo } end
  local raw = span / (n or 5)
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local step = mag
  for _, m in ipairs { 1, 2, 5, 10 } do
    if raw <= m * mag then step = m * mag; break end
  end
  local ticks = {}
  for t = math.ceil(lo / step) * step, hi + step * 1e-9, step do ticks[#ticks + 1] = t end
  return ticks
end

--- Write the frontier as an SVG plot: L0 on x (log scale when it spans more than a factor of 10, or
-- opts.log_x), the reconstruction score (or explained variance) on y, every row with an L0 and a y a
-- labelled point, the frontier rows joined in L0 order. Written to a temporary name, then renamed.
-- opts.title: the heading. Returns the number of points drawn.
function M.write_svg(path, rows, opts)
  opts = opts or {}
  local pts = {}
  for _, r in ipairs(rows) do
    if r.l0 and r.y then pts[#pts + 1] = r end
  end
  local W, H, left, right, top, bottom = 720, 480, 80, 40, 50, 60
  local x_lo, x_hi, y_lo, y_hi = math.huge, -math.huge, math.huge, -math.huge
  for _, p in ipairs(pts) do
    x_lo, x_hi = math.min(x_lo, p.l0), math.max(x_hi, p.l0)
    y_lo, y_hi = math.min(y_lo, p.y), math.max(y_hi, p.y)
  end
  if #pts == 0 then x_lo, x_hi, y_lo, y_hi = 1, 10, 0, 1 end
  local log_x = opts.log_x
  if log_x == nil then log_x = x_lo > 0 and x_hi / x_lo > 10 end
  local function fx(v) return log_x and math.log(v, 10) or v end
  local a, b = fx(x_lo), fx(x_hi)
  local pad_x = (b - a) > 0 and (b - a) * 0.08 or (log_x and 0.1 or math.max(math.abs(a) * 0.1, 1))
  a, b = a - pad_x, b + pad_x
  local pad_y = (y_hi - y_lo) > 0 and (y_hi - y_lo) * 0.1 or 0.05
  local c, d = y_lo - pad_y, y_hi + pad_y
  local pw, ph = W - left - right, H - top - bottom
  local function px(v) return left + (fx(v) - a) / (b - a) * pw end
  local function py(v) return top + (d - v) / (d - c) * ph end
  local y_label = pts[1] and pts[1].y_name == "explained_variance" and "explained variance"
                  or "reconstruction score (loss recovered)"
  local out = {
    string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">', W, H),
    string.format('<rect width="%d" height="%d" fill="white"/>', W, H),
    string.format('<text x="%d" y="28" font-size="15">%s</text>', left, esc(opts.title or "L0 / reconstruction frontier")),
    string.format('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="black"/>', left, top, pw, ph),
  }
  -- x ticks: decades and 2, 5 between them on a log axis; nice steps on a linear one
  local xt = {}
  if log_x then
    for k = math.floor(a), math.ceil(b) do
      for _, m in ipairs { 1, 2, 5 } do
        local v = m * 10 ^ k
        if math.log(v, 10) >= a and math.log(v, 10) <= b then xt[#xt + 1] = v end
      end
    end
  else
    xt = nice_ticks(a, b, 6)
  end
  for _, v in ipairs(xt) do
    local x = px(v)
    out[#out + 1] = string.format('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>', x, top, x, top + ph)
    out[#out + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">%g</text>', x, top + ph + 18, v)
  end
  for _, v in ipairs(nice_ticks(c, d, 6)) do
    local y = py(v)
    out[#out + 1] = string.format('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>', left, y, left + pw, y)
    out[#out + 1] = string.format('<text x="%d" y="%.1f" text-anchor="end">%.3g</text>', left - 6, y + 4, v)
  end
  out[#out + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">L0 (active features per token%s)</text>',
                                left + pw / 2, H - 15, log_x and ", log scale" or "")
  out[#out + 1] = string.format('<text transform="translate(20 %.1f) rotate(-90)" text-anchor="middle">%s</text>',
                                top + ph / 2, esc(y_label))
  local line = {}
  for _, p in ipairs(pts) do
    if p.frontier then line[#line + 1] = string.format("%.1f,%.1f", px(p.l0), py(p.y)) end
  end
  if #line > 1 then
    out[#out + 1] = string.format('<polyline points="%s" fill="none" stroke="#4a78b5" stroke-width="2"/>', table.concat(line, " "))
  end
  for _, p in ipairs(pts) do
    local x, y = px(p.l0), py(p.y)
    out[#out + 1] = string.format('<circle cx="%.1f" cy="%.1f" r="5" fill="%s" stroke="black"><title>%s: L0 %.2f, %s %.4f</title></circle>',
                                  x, y, p.frontier and "#4a78b5" or "#bbb", esc(p.name), p.l0, p.y_name, p.y)
    -- labels of points in the right third go to their left, inside the plot
    local right_side = x > left + pw * 2 / 3
    out[#out + 1] = string.format('<text x="%.1f" y="%.1f"%s>%s</text>', right_side and x - 8 or x + 8, y - 8,
                                  right_side and ' text-anchor="end"' or "", esc(p.name))
  end
  out[#out + 1] = "</svg>\n"
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then error("cannot write " .. path .. ": " .. tostring(err), 0) end
  local ok, werr = f:write(table.concat(out, "\n"))
  local closed = f:close()
  if not ok or not closed then os.remove(tmp); error("cannot write " .. path .. ": " .. tostring(werr), 0) end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then os.remove(tmp); error("cannot write " .. path .. ": " .. tostring(rerr), 0) end
  return #pts
end

return M
