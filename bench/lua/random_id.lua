-- One request per call to a random record: METHOD PREFIX<id> with id uniform in [1, N].
-- Arguments (after `--` on wrk's command line): N METHOD PREFIX [BODY [AUTHORIZATION [ACCEPT]]]
-- A BODY is sent as application/json. Placeholders in it are filled per request from the id,
-- with the same formulas as bench.rest.dog(i), so a record keeps its indexed values:
-- {id}, {breed}, {owner}, {tags}. `done` prints one machine-readable line for bench.wrk.

local breeds = {"lab", "beagle", "collie", "poodle", "boxer", "husky", "pug", "terrier"}

local function tags_of(id)
  if id % 3 == 0 then return "[]" end
  return '["good","' .. breeds[math.floor(id / 7) % #breeds + 1] .. '"]'
end

local function fill(template, id)
  return (template:gsub("{(%a+)}", function(name)
    if name == "id" then return tostring(id) end
    if name == "breed" then return breeds[id % #breeds + 1] end
    if name == "owner" then return tostring(id % 5000) end
    if name == "tags" then return tags_of(id) end
  end))
end

local next_thread = 1

function setup(thread)
  thread:set("thread_number", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  records = tonumber(args[1])
  method = args[2]
  prefix = args[3]
  body = args[4]
  if body == "" then body = nil end
  headers = {}
  if body then headers["Content-Type"] = "application/json" end
  if args[5] and args[5] ~= "" then headers["Authorization"] = args[5] end
  if args[6] and args[6] ~= "" then headers["Accept"] = args[6] end
  -- Threads start in the same second: mix in the thread number so their id sequences differ.
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function request()
  local id = math.random(records)
  local payload = body
  if payload and payload:find("{", 2, true) then payload = fill(payload, id) end
  return wrk.format(method, prefix .. id, headers, payload)
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
