-- wrk script: a JSON array of clickstream events per POST /api/v1/events/{topic}/batch.
--
--   wrk -t2 -c8 -d20s --latency -s bench/post_batch.lua \
--     http://127.0.0.1:18080/api/v1/events/events.clickstream/batch -- <nonce> <keys> <batch size>
--
-- Every event carries a new event_id ("b-<nonce>-<thread>-<counter>") and a user_id drawn from
-- <keys> users; the events are the same ~300-byte clickstream events as bench/post_event.lua.
-- A batch answers 200 only when every item was written; response() also adds up the per-item
-- counts of the body, so the run can check that every event was accepted.
--
-- done() prints one machine-readable line that bench/run.sh parses:
--   BENCH_RESULT requests=.. duration_us=.. rps=.. p50_us=.. p90_us=.. p99_us=.. p999_us=..
--                max_us=.. mean_us=.. ok=.. non2xx=.. statuses=200:..
--                batch_size=.. accepted=.. duplicates=.. rejected=.. failed=.. unparsed=..
--                err_connect=.. err_read=.. err_write=.. err_timeout=..
-- "ok" counts 200 answers; "non2xx" every answer outside 200..299; "unparsed" answers whose body
-- had no per-item counts.

local threads = {}
local next_thread_id = 0

function setup(thread)
  next_thread_id = next_thread_id + 1
  thread:set("thread_id", next_thread_id)
  table.insert(threads, thread)
end

local EVENT_TYPES = { "page_view", "page_view", "page_view", "click", "click", "add_to_cart", "search", "scroll" }
local PAGES = { "/", "/products/shoes", "/products/jackets", "/products/bags", "/cart", "/checkout", "/search", "/account" }
local REFERRERS = { "https://www.google.com/", "https://www.bing.com/", "https://news.example.org/", "direct", "https://mail.example.com/" }
local AGENTS = {
  "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
  "Mozilla/5.0 (Macintosh) Safari/605.1.15",
  "Mozilla/5.0 (iPhone; iOS 17_5) Mobile/15E148",
}

local nonce, keys, counter = "0", 5000, 0
batch_size = 100 -- global: read from done() through thread:get
local sec, sec_text = -1, ""
statuses = {} -- globals: read from done() through thread:get
items = { accepted = 0, duplicates = 0, rejected = 0, failed = 0, unparsed = 0 }

local function pick(list) return list[math.random(#list)] end

local function timestamp()
  local now = os.time()
  if now ~= sec then sec, sec_text = now, os.date("!%Y-%m-%dT%H:%M:%S", now) end
  return string.format("%s.%03dZ", sec_text, counter % 1000)
end

-- one event as JSON text; event ids are unique per (nonce, thread, counter)
local function clickstream_event()
  counter = counter + 1
  local user = math.random(keys)
  return string.format(
    '{"event_id":"b-%s-%d-%d","timestamp":"%s","event_type":"%s","user_id":"user-%06d",'
      .. '"payload":{"session_id":"s-%06d-%04x","url":"%s/item-%d","referrer":"%s",'
      .. '"user_agent":"%s","duration_ms":%d}}',
    nonce, thread_id, counter, timestamp(), pick(EVENT_TYPES), user,
    user, math.random(0, 65535), pick(PAGES), math.random(1, 99999), pick(REFERRERS),
    pick(AGENTS), math.random(20, 30000))
end

function init(args)
  nonce = args[1] or tostring(os.time())
  keys = tonumber(args[2] or "5000")
  batch_size = tonumber(args[3] or "100")
  math.randomseed(os.time() * 1000 + thread_id)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local events = {}
  for i = 1, batch_size do events[i] = clickstream_event() end
  return wrk.format(nil, nil, nil, "[" .. table.concat(events, ",") .. "]")
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  -- the counts come first in the body: {"accepted":N,"duplicates":N,"rejected":N,"failed":N,...}
  local head = string.sub(body or "", 1, 200)
  local a = string.match(head, '"accepted":(%d+)')
  local d = string.match(head, '"duplicates":(%d+)')
  local r = string.match(head, '"rejected":(%d+)')
  local f = string.match(head, '"failed":(%d+)')
  if a and d and r and f then
    items.accepted = items.accepted + tonumber(a)
    items.duplicates = items.duplicates + tonumber(d)
    items.rejected = items.rejected + tonumber(r)
    items.failed = items.failed + tonumber(f)
  else
    items.unparsed = items.unparsed + 1
  end
end

function done(summary, latency, requests)
  local merged = {}
  local total = { accepted = 0, duplicates = 0, rejected = 0, failed = 0, unparsed = 0 }
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses") or {}) do merged[status] = (merged[status] or 0) + n end
    for k, n in pairs(t:get("items") or {}) do total[k] = total[k] + n end
  end
  local size = threads[1] and threads[1]:get("batch_size") or 0
  local codes, ok, non2xx, text = {}, 0, 0, {}
  for status in pairs(merged) do table.insert(codes, status) end
  table.sort(codes)
  for _, status in ipairs(codes) do
    local n = merged[status]
    if status == 200 then ok = ok + n end
    if status < 200 or status > 299 then non2xx = non2xx + n end
    table.insert(text, string.format("%d:%d", status, n))
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.0f "
      .. "ok=%d non2xx=%d statuses=%s batch_size=%d accepted=%d duplicates=%d rejected=%d failed=%d unparsed=%d "
      .. "err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, ok, non2xx, (#text > 0 and table.concat(text, ",") or "none"),
    size, total.accepted, total.duplicates, total.rejected, total.failed, total.unparsed,
    e.connect, e.read, e.write, e.timeout))
end
