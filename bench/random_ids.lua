-- wrk script for bench/run.sh: every request GETs a random line of a request list.
-- Usage: wrk ... -s bench/random_ids.lua URL -- LIST_FILE
-- Each line of LIST_FILE is `PATH<TAB>HEADER-NAME<TAB>HEADER-VALUE` (one api's or mixed apis').
-- Building the request in Lua costs the generator throughput (about 40 % here): compare such
-- runs only with runs that use this same script.
local reqs = {}
local n = 0

init = function(args)
  local file = args[1]
  for line in io.lines(file) do
    local path, name, value = line:match("^([^\t]+)\t([^\t]+)\t(.+)$")
    if path then
      n = n + 1
      reqs[n] = { path, name, value }
    end
  end
  if n == 0 then
    error("no requests in " .. tostring(file))
  end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000))
end

request = function()
  local r = reqs[math.random(n)]
  return wrk.format("GET", r[1], { [r[2]] = r[3] })
end

-- done(): the RESULT line of wrk_report.lua, loaded from beside this file.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
dofile(here .. "wrk_report.lua")
