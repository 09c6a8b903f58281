-- post_body_headers.lua: the shared harness's lua/post_body.lua, plus request headers read
-- from a file (one "Name: value" per line), e.g. shipyard's "Authorization: Bearer <key>".
--
--   HARNESS_LUA_DIR=<harness>/lua wrk -t1 -c16 -d10s --latency -s lua/post_body_headers.lua \
--       http://127.0.0.1:PORT/PATH -- BODY.json MAX_RESPONSES_PER_THREAD HEADERS_FILE
--
-- Everything else (the body, the response cap, the WRKJSON line) is post_body.lua's own code.
-- wrk builds its one static request after init(), so the headers go into every request.
local dir = os.getenv("HARNESS_LUA_DIR")
if dir == nil then
  error("set HARNESS_LUA_DIR to the shared harness's lua/ folder")
end
dofile(dir .. "/post_body.lua")

local post_body_init = init

function init(args)
  post_body_init(args)
  local path = args[3]
  if path ~= nil and path ~= "" then
    for line in io.lines(path) do
      local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
      if name ~= nil then
        wrk.headers[name] = value
      end
    end
  end
end
