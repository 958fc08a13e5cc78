-- wrk script: GET a random object under a random advertised namespace, from a random
-- client of the benchmark GeoIP database (X-Forwarded-For 20.K.1.1; the director trusts
-- loopback, nginx ignores the header: both get the same requests).
-- Usage: wrk ... -s random.lua URL -- PATHS_FILE   (one namespace prefix a line)
local paths = {}

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  math.randomseed(os.time() + tonumber(tostring(paths):sub(8), 16) % 100000)
end

function request()
  local ns = paths[math.random(#paths)]
  local path = ns .. "/run" .. math.random(100) .. "/file" .. math.random(1000000) .. ".dat"
  local headers = { ["X-Forwarded-For"] = "20." .. math.random(0, 255) .. ".1.1" }
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
