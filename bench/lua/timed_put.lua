-- PUT PREFIX<id> with id uniform in [1, N], each body {"sent": <unix time, us precision>, "n": i},
-- a connection pausing DELAY ms between requests (so a few connections give a steady rate).
-- Arguments (after `--` on wrk's command line): N PREFIX DELAY_MS AUTHORIZATION
-- `done` prints one machine-readable line for bench.wrk.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_usec; } kiln_timeval;
  int gettimeofday(kiln_timeval *tv, void *tz);
]]
local now = ffi.new("kiln_timeval")

local next_thread = 1

function setup(thread)
  thread:set("thread_number", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  records = tonumber(args[1])
  prefix = args[2]
  pause = tonumber(args[3])
  headers = {["Content-Type"] = "application/json", ["Authorization"] = args[4]}
  sequence = 0
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function delay()
  return pause
end

function request()
  sequence = sequence + 1
  ffi.C.gettimeofday(now, nil)
  local sent = tonumber(now.tv_sec) + tonumber(now.tv_usec) / 1e6
  local body = string.format('{"sent":%.6f,"n":%d}', sent, sequence)
  return wrk.format("PUT", prefix .. math.random(records), headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d "
      .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
