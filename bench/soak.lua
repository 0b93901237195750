-- Soak benchmark (issue 18, point 11; not a ctest): many small steps with resampling (the
-- anthropic_resample and reinit_dead plugins) and periodic checkpoints, printing the process's resident
-- memory and open file descriptors every report_every steps, then the first, last and largest figures.
-- Flat figures mean no leak of memory or files. About 4 minutes on the 2-core VM:
--   saefw run bench/soak.lua [--steps 100000 --run_dir /tmp/soak ...]
local saefw = require "saefw"

local cfg = saefw.config {
  seed = 49, d_in = 16, n_features = 32, dict_mult = 4, batch_size = 32, buffer_mult = 64, steps = 100000,
  lr = 1e-3, l1_coeff = 5e-4, checkpoint_every = 1000, eval_every = 5000, report_every = 5000,
  resample_every = 2500, run_dir = "",
}
local run_dir = cfg.run_dir ~= "" and cfg.run_dir or os.tmpname() .. ".soak"
if cfg.run_dir == "" then os.remove(run_dir:sub(1, -6)) end

-- The process's own pid (the first field of /proc/self/stat), so that `ls` lists this process's fds.
local function my_pid()
  local f = assert(io.open("/proc/self/stat", "r"))
  local pid = f:read("n")
  f:close()
  return math.tointeger(pid)
end
local pid = my_pid()

local function rss_kib()
  local f = assert(io.open("/proc/self/status", "r"))
  local rss
  for line in f:lines() do
    rss = rss or tonumber(line:match("^VmRSS:%s+(%d+)"))
  end
  f:close()
  return rss
end

local function open_fds()
  local p = assert(io.popen("ls /proc/" .. pid .. "/fd | wc -l"))
  local n = tonumber(p:read("a"))
  p:close()
  return n - 1 -- the pipe io.popen holds open while ls runs
end

local source = saefw.synthetic { d_in = cfg.d_in, n_features = cfg.n_features, p_active = 0.05, seed = 7 }
local sae = saefw.sae { d_in = cfg.d_in, d_sae = cfg.d_in * cfg.dict_mult, l1_coeff = cfg.l1_coeff, seed = cfg.seed }
local samples = {}
local t0 = os.clock()
local function record(m)
  collectgarbage() -- the script's own garbage is not the engine's memory
  samples[#samples + 1] = { step = m.step, rss = rss_kib(), fds = open_fds(), lua = collectgarbage("count") }
  local s = samples[#samples]
  print(string.format("step %6d  rss %6d KiB  fds %3d  lua heap %4.0f KiB  cpu %.0f s", s.step, s.rss, s.fds, s.lua,
                      os.clock() - t0))
end

local result = saefw.train {
  sae = sae, source = source, batch_size = cfg.batch_size, buffer_size = cfg.batch_size * cfg.buffer_mult,
  steps = cfg.steps, seed = cfg.seed, progress = false,
  optimizer = saefw.plugin("adam", { lr = cfg.lr }),
  plugins = {
    saefw.plugin("anthropic_resample", { every = cfg.resample_every, samples = 2048, chunk = 256 }),
    saefw.plugin("reinit_dead", { every = cfg.resample_every, batches = 2 }),
  },
  log_every = cfg.report_every, eval_every = cfg.eval_every, checkpoint_every = cfg.checkpoint_every,
  run_dir = run_dir, config = cfg, on_log = record,
}
record { step = cfg.steps }

-- The first report is taken after step 0; the figures from the second on are the steady state.
local first, last, max_rss, max_fds = samples[2] or samples[1], samples[#samples], 0, 0
for i = 2, #samples do
  max_rss = math.max(max_rss, samples[i].rss)
  max_fds = math.max(max_fds, samples[i].fds)
end
print(string.format("soak: %d steps, final loss %.5f, dead %.3f; rss %d KiB at step %d, %d KiB at the end, max %d KiB "
                    .. "(growth %+d KiB); open fds %d -> %d (max %d); run folder %s",
                    cfg.steps, result.loss, result.dead, first.rss, first.step, last.rss, max_rss, last.rss - first.rss,
                    first.fds, last.fds, max_fds, run_dir))
