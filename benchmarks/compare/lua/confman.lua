-- wrk script for Confman: PUT/GET /api/v1/namespaces/{ns}/config/{key} with X-Api-Key.
-- Extra arguments: ns=bench  apikey=KEY  read=local|linearizable  forward=0|1 (writes carry
-- ?forward=true so a follower proxies them to the leader instead of answering 307).
local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

common.install(function(a, _tid)
  local nkeys = tonumber(a.keys or "1000")
  local size = tonumber(a.value or "1024")
  local ns = a.ns or "bench"
  local query = (a.read == "linearizable") and "?consistency=linearizable" or ""
  local wquery = (a.forward == "1") and "?forward=true" or ""
  local headers = {["Content-Type"] = "application/json", ["X-Api-Key"] = a.apikey or ""}
  local reads, writes = {}, {}
  for i = 0, nkeys - 1 do
    local path = "/api/v1/namespaces/" .. ns .. "/config/" .. common.key(i)
    writes[i + 1] = wrk.format("PUT", path .. wquery, headers,
      '{"value":"' .. common.value(i, size) .. '"}')
    reads[i + 1] = wrk.format("GET", path .. query, headers)
  end
  return reads, writes
end)
