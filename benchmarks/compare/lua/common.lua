-- Shared by confman.lua and etcd.lua: arguments, base64, value/key tables, result reporting.
--
-- Arguments (after `--` on wrk's command line), as name=value pairs:
--   mode=write|read|mixed  keys=N  value=BYTES  read_pct=80  seed=N  (+ per-system ones)
-- Each thread precomputes one formatted request per key and operation at init, so the
-- request() hook is a table lookup. done() prints one line "@@COMPARE <json>" with the
-- summary, wrk's error counters, non-2xx answers by status and the sparse latency histogram
-- (microseconds -> count), which the Python side merges exactly across wrk processes.

local M = {}

function M.parse_args(args)
  local out = {}
  for _, a in ipairs(args or {}) do
    local k, v = string.match(a, "^([%w_]+)=(.*)$")
    if k then out[k] = v end
  end
  return out
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 (RFC 4648, with '=' padding), as etcd's JSON gateway expects for bytes.
function M.base64(s)
  local out = {}
  local n = #s
  for i = 1, n, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(v / 262144) % 64
    local c2 = math.floor(v / 4096) % 64
    local c3 = math.floor(v / 64) % 64
    local c4 = v % 64
    out[#out + 1] = string.sub(B64, c1 + 1, c1 + 1) .. string.sub(B64, c2 + 1, c2 + 1)
      .. (b and string.sub(B64, c3 + 1, c3 + 1) or "=")
      .. (c and string.sub(B64, c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

function M.key(i)
  return string.format("k%06d", i)
end

-- A printable value of `size` bytes that differs per key (JSON-safe: letters and digits).
function M.value(i, size)
  local head = M.key(i) .. "-"
  local filler = string.rep("abcdefghijklmnopqrstuvwxyz0123456789", math.ceil(size / 36) + 1)
  return string.sub(head .. filler, 1, size)
end

-- Minimal JSON encoder for the report (numbers, strings without escapes, tables).
local function encode(v)
  local t = type(v)
  if t == "number" then
    if v == math.floor(v) then return string.format("%d", v) end
    return string.format("%.6f", v)
  elseif t == "string" then
    return '"' .. v .. '"'
  elseif t == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = '"' .. tostring(k) .. '":' .. encode(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end
M.encode = encode

-- Install wrk hooks: setup/init/request/response/done. `build(args, thread_id)` returns
-- reads, writes (arrays of formatted requests, one per key) for this thread.
function M.install(build)
  local threads = {}
  local counter = 0

  function setup(thread)
    counter = counter + 1
    thread:set("tid", counter)
    table.insert(threads, thread)
  end

  function init(args)
    local a = M.parse_args(args)
    local mode = a.mode or "read"
    local read_pct = tonumber(a.read_pct or "80")
    math.randomseed((tonumber(a.seed or "1") or 1) * 7919 + (tid or 0) * 104729)
    local reads, writes = build(a, tid or 0)
    local nkeys = #(reads or writes)
    bad = {}       -- status -> count of non-2xx answers (read back by done)
    local random = math.random
    if mode == "write" then
      request = function() return writes[random(nkeys)] end
    elseif mode == "read" then
      request = function() return reads[random(nkeys)] end
    else
      request = function()
        if random(100) <= read_pct then return reads[random(nkeys)] end
        return writes[random(nkeys)]
      end
    end
  end

  function response(status)
    if status < 200 or status > 299 then
      local k = tostring(status)
      bad[k] = (bad[k] or 0) + 1
    end
  end

  function done(summary, latency, requests)
    local non2xx = {}
    for _, t in ipairs(threads) do
      local b = t:get("bad") or {}
      for k, v in pairs(b) do non2xx[k] = (non2xx[k] or 0) + v end
    end
    local parts = {}
    -- `#latency` is the number of distinct recorded values; `latency(i)` returns the i-th
    -- value (microseconds) and how many requests had it.
    for i = 1, #latency do
      local v, n = latency(i)
      if n and n > 0 then parts[#parts + 1] = '"' .. string.format("%d", v) .. '":' .. n end
    end
    local e = summary.errors
    io.write("@@COMPARE ", encode({
      requests = summary.requests,
      duration_us = summary.duration,
      bytes = summary.bytes,
      errors = {connect = e.connect, read = e.read, write = e.write,
                status = e.status, timeout = e.timeout},
      non2xx = non2xx,
      p50_us = latency:percentile(50), p99_us = latency:percentile(99),
      max_us = latency.max,
    }):sub(1, -2), ',"hist":{', table.concat(parts, ","), "}}\n")
  end
end

return M
