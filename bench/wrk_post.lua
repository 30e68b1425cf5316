-- wrk script: POST the file BENCH_BODY, as multipart field BENCH_FIELD (default "file") with
-- BENCH_MODE=multipart, or as the raw body with content type BENCH_TYPE (BENCH_MODE=raw), with the
-- header BENCH_HEADER ("Name: value") if set.
-- Prints one JSON line of results at the end.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local payload = f:read("*all")
f:close()
wrk.method = "POST"
if os.getenv("BENCH_MODE") == "raw" then
  wrk.body = payload
  wrk.headers["Content-Type"] = os.getenv("BENCH_TYPE") or "application/octet-stream"
else
  local boundary = "wrkbenchboundary7d93"
  wrk.body = "--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="' .. (os.getenv("BENCH_FIELD") or "file")
    .. '"; filename="digit.png"\r\n'
    .. "Content-Type: image/png\r\n\r\n" .. payload .. "\r\n--" .. boundary .. "--\r\n"
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
end
local header = os.getenv("BENCH_HEADER") or ""
local name, value = header:match("^([^:]+):%s*(.*)$")
if name then
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    errors.connect + errors.read + errors.write + errors.timeout + errors.status))
end
