-- wrk script: one clickstream event per POST /api/v1/events/{topic}.
--
--   wrk -t2 -c16 -d20s --latency -s bench/post_event.lua \
--     http://127.0.0.1:18080/api/v1/events/events.clickstream -- <nonce> <keys>
--
-- Every request carries a new event_id ("b-<nonce>-<thread>-<counter>"), so the gateway's dedupe
-- window never answers from memory: each 201 is a real write acknowledged by Kafka. user_id is
-- drawn uniformly from <keys> users so the records spread over every partition. The body is a
-- realistic clickstream event of about 300 bytes.
--
-- done() prints one machine-readable line that bench/run.sh parses:
--   BENCH_RESULT requests=.. duration_us=.. rps=.. p50_us=.. p90_us=.. p99_us=.. p999_us=..
--                max_us=.. mean_us=.. ok=.. duplicates=.. non2xx=.. statuses=201:..,503:..
--                err_connect=.. err_read=.. err_write=.. err_timeout=..
-- "ok" counts 201 answers; "duplicates" 200 answers (a replayed event_id: must be 0);
-- "non2xx" every answer outside 200..299.

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
local sec, sec_text = -1, ""
statuses = {} -- global: read from done() through thread:get

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
  math.randomseed(os.time() * 1000 + thread_id)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  return wrk.format(nil, nil, nil, clickstream_event())
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses") or {}) do merged[status] = (merged[status] or 0) + n end
  end
  local codes, ok, dup, non2xx, text = {}, 0, 0, 0, {}
  for status in pairs(merged) do table.insert(codes, status) end
  table.sort(codes)
  for _, status in ipairs(codes) do
    local n = merged[status]
    if status == 201 then ok = ok + n elseif status == 200 then dup = dup + n end
    if status < 200 or status > 299 then non2xx = non2xx + n end
    table.insert(text, string.format("%d:%d", status, n))
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.0f "
      .. "ok=%d duplicates=%d non2xx=%d statuses=%s err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, ok, dup, non2xx, (#text > 0 and table.concat(text, ",") or "none"),
    e.connect, e.read, e.write, e.timeout))
end
