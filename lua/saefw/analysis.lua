-- Analysis of a trained SAE, as the seed's analysis did it: feature frequencies with a log10
-- histogram (terminal and SVG), dead and rare fractions, and the rare-feature direction with the
-- cosine histogram of the rare features' encoder columns against it.
local M = {}

--- Frequency statistics: dead, below 1e-6 / 1e-5 / 1e-4, and a log10 histogram (dead features apart).
function M.frequency_stats(freqs, opts)
  opts = opts or {}
  local lo, hi, nbins = opts.lo or -7, opts.hi or 0, opts.bins or 28
  local n, dead, b6, b5, b4 = #freqs, 0, 0, 0, 0
  local counts = {}
  for b = 1, nbins do counts[b] = 0 end
  for _, f in ipairs(freqs) do
    if f == 0 then dead = dead + 1 end
    if f < 1e-6 then b6 = b6 + 1 end
    if f < 1e-5 then b5 = b5 + 1 end
    if f < 1e-4 then b4 = b4 + 1 end
    if f > 0 then
      local x = math.log(f, 10)
      local b = math.floor((x - lo) / (hi - lo) * nbins) + 1
      b = math.max(1, math.min(nbins, b))
      counts[b] = counts[b] + 1
    end
  end
  return { n = n, dead = dead / n, below_1e6 = b6 / n, below_1e5 = b5 / n, below_1e4 = b4 / n, dead_count = dead,
           hist = { lo = lo, hi = hi, counts = counts, label = "log10 feature frequency" } }
end

--- The seed's rare direction: the normalised mean of the encoder columns of features with frequency
-- below threshold. Returns the direction (array of d_in), the rare feature indices, and the cosine
-- of each rare feature's encoder column with the direction.
function M.rare_direction(sae, freqs, threshold)
  threshold = threshold or 1e-4
  local W, shape = sae:tensor("W_enc") -- [d_in, d_sae], flat row-major
  local d_in, d_sae = shape[1], shape[2]
  local rare = {}
  for j = 1, d_sae do
    if freqs[j] < threshold then rare[#rare + 1] = j end
  end
  if #rare == 0 then return nil, rare, {} end
  local dir = {}
  for i = 1, d_in do
    local s = 0
    for _, j in ipairs(rare) do s = s + W[(i - 1) * d_sae + j] end
    dir[i] = s / #rare
  end
  local norm = 0
  for i = 1, d_in do norm = norm + dir[i] * dir[i] end
  norm = math.sqrt(norm)
  if norm == 0 then return nil, rare, {} end
  for i = 1, d_in do dir[i] = dir[i] / norm end
  local cos = {}
  for k, j in ipairs(rare) do
    local dot, nn = 0, 0
    for i = 1, d_in do
      local w = W[(i - 1) * d_sae + j]
      dot = dot + w * dir[i]
      nn = nn + w * w
    end
    cos[k] = nn > 0 and dot / math.sqrt(nn) or 0
  end
  return dir, rare, cos
end

--- A histogram of values in [lo, hi] with nbins bins.
function M.histogram(values, lo, hi, nbins, label)
  local counts = {}
  for b = 1, nbins do counts[b] = 0 end
  for _, v in ipairs(values) do
    local b = math.floor((v - lo) / (hi - lo) * nbins) + 1
    b = math.max(1, math.min(nbins, b))
    counts[b] = counts[b] + 1
  end
  return { lo = lo, hi = hi, counts = counts, label = label }
end

--- Text rendering: one line per bin with its range, count and a bar.
function M.render_text(h, width)
  width = width or 50
  local max = 0
  for _, c in ipairs(h.counts) do max = math.max(max, c) end
  local lines = { h.label }
  local n = #h.counts
  for b, c in ipairs(h.counts) do
    local a = h.lo + (h.hi - h.lo) * (b - 1) / n
    local z = h.lo + (h.hi - h.lo) * b / n
    local bar = max > 0 and string.rep("#", math.floor(c / max * width + 0.5)) or ""
    lines[#lines + 1] = string.format("  [%6.2f, %6.2f) %7d %s", a, z, c, bar)
  end
  return table.concat(lines, "\n")
end

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end

--- An SVG file with one bar chart per histogram, stacked vertically; written atomically.
function M.write_svg(path, title, hists)
  local W, H, pad = 640, 260, 50
  local parts = { string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">',
                                W, H * #hists + 30),
                  string.format('<text x="%d" y="20" font-size="15">%s</text>', pad, esc(title)) }
  for k, h in ipairs(hists) do
    local y0 = 30 + (k - 1) * H
    local max = 0
    for _, c in ipairs(h.counts) do max = math.max(max, c) end
    local n = #h.counts
    local bw = (W - 2 * pad) / n
    parts[#parts + 1] = string.format('<text x="%d" y="%d">%s (max bin %d)</text>', pad, y0 + 18, esc(h.label), max)
    for b, c in ipairs(h.counts) do
      local bh = max > 0 and (c / max) * (H - 80) or 0
      parts[#parts + 1] = string.format('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a78b5"><title>%d</title></rect>',
                                        pad + (b - 1) * bw, y0 + H - 40 - bh, math.max(bw - 1, 1), bh, c)
    end
    parts[#parts + 1] = string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', pad, y0 + H - 40, W - pad, y0 + H - 40)
    for t = 0, 4 do
      local v = h.lo + (h.hi - h.lo) * t / 4
      parts[#parts + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">%.2f</text>', pad + (W - 2 * pad) * t / 4, y0 + H - 22, v)
    end
  end
  parts[#parts + 1] = "</svg>\n"
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then error("cannot write " .. path .. ": " .. tostring(err), 0) end
  local ok, werr = f:write(table.concat(parts, "\n"))
  local closed = f:close()
  if not ok or not closed then os.remove(tmp); error("cannot write " .. path .. ": " .. tostring(werr), 0) end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then os.remove(tmp); error("cannot write " .. path .. ": " .. tostring(rerr), 0) end
end

return M
