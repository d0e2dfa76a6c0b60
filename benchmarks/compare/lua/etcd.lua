-- wrk script for etcd's v3 JSON gateway: POST /v3/kv/put and POST /v3/kv/range (base64).
-- Extra argument: read=serializable|linearizable (default serializable).
local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

common.install(function(a, _tid)
  local nkeys = tonumber(a.keys or "1000")
  local size = tonumber(a.value or "1024")
  local serializable = (a.read or "serializable") == "serializable"
  local headers = {["Content-Type"] = "application/json"}
  local reads, writes = {}, {}
  for i = 0, nkeys - 1 do
    local k = common.base64(common.key(i))
    local v = common.base64(common.value(i, size))
    writes[i + 1] = wrk.format("POST", "/v3/kv/put", headers,
      '{"key":"' .. k .. '","value":"' .. v .. '"}')
    local body = '{"key":"' .. k .. '"' .. (serializable and ',"serializable":true' or "") .. "}"
    reads[i + 1] = wrk.format("POST", "/v3/kv/range", headers, body)
  end
  return reads, writes
end)
