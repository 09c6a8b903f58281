-- post_body_headers.lua: the shared harness's lua/post_body.lua, plus request headers read
-- from one or more files (one "Name: value" per line), e.g. shipyard's
-- "Authorization: Bearer <key>" and, for the Open Inference Protocol's binary extension,
-- "Content-Type: application/octet-stream" and "Inference-Header-Content-Length: <n>".
--
--   HARNESS_LUA_DIR=<harness>/lua wrk -t1 -c16 -d10s --latency -s lua/post_body_headers.lua \
--       http://127.0.0.1:PORT/PATH -- BODY MAX_RESPONSES_PER_THREAD HEADERS_FILE [HEADERS_FILE...]
--
-- Everything else (the body, the response cap, the WRKJSON line) is post_body.lua's own code;
-- it reads the body in binary mode ("rb"), so binary bodies go out byte for byte. Headers are
-- applied after post_body.lua's, in file order, so a file's Content-Type replaces its
-- application/json (same spelling: wrk.headers is a plain table). Empty arguments are skipped.
-- wrk builds its one static request after init(), so the headers go into every request.
local dir = os.getenv("HARNESS_LUA_DIR")
if dir == nil then
  error("set HARNESS_LUA_DIR to the shared harness's lua/ folder")
end
dofile(dir .. "/post_body.lua")

local post_body_init = init

function init(args)
  post_body_init(args)
  for i = 3, #args do
    local path = args[i]
    if path ~= nil and path ~= "" then
      for line in io.lines(path) do
        local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
        if name ~= nil then
          wrk.headers[name] = value
        end
      end
    end
  end
end
