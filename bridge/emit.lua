-- Append a batch of one run's events to its user's history and publish them, atomically.
-- KEYS[1] meta hash (seq, epoch, bytes: the size of the events in KEYS[2])
-- KEYS[2] history stream
-- KEYS[3] the run's hash (n: events stored for the run, done: a terminal event stored;
--   st: when it started, end/et/ep: its terminal event's type, ts and payload)
-- KEYS[4] lifecycle stream; absent on a Redis Cluster, where it is on another slot
--   and the caller appends the entries itself (bridge/emitter.py)
-- ARGV[1] epoch to use if the user has none yet   ARGV[2] history max length
-- ARGV[3] ttl of the user's keys in seconds        ARGV[4] live channel
-- ARGV[5] the first event's number within its run (1, 2, ...; 0: append, no duplicate check)
-- ARGV[6] user id, ARGV[7] run id (for lifecycle entries)
-- ARGV[8] history max bytes (the sum of the stored events' sizes)
-- ARGV[9] the current hour (the window of the bytes written counted in KEYS[1]'s
-- ww, wb: what the backend's history quota reads)
-- ARGV[10] PUBLISH, or SPUBLISH on a Redis Cluster (sharded pub/sub)
-- ARGV[11] the run's last event number this Redis acknowledged to the emitter: fewer
-- stored means the Redis lost acknowledged writes (a replica promoted before it had
-- them), so the user's numbering moves to a new epoch and every client resyncs
-- rather than be sent new events under numbers it saw for others
-- then per event, 5 values: body (a JSON object without its opening brace), type,
-- ts, "1" for a terminal event, the lifecycle payload JSON ("" when the event does
-- not change the run's status and so does not go to the lifecycle stream)
-- Returns {epoch, seq...}: one seq per event, -1 for a duplicate (this number was
-- stored before: a retried emit whose first attempt succeeded), -2 after a terminal
-- event; {'', -2} when the run already ended. All events of the batch go out in one message, one per line.
if redis.call('HGET', KEYS[3], 'done') == '1' then
  return {'', -2}
end
local first = tonumber(ARGV[5])
local stored = tonumber(redis.call('HGET', KEYS[3], 'n') or '0')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch and stored < tonumber(ARGV[11]) then
  epoch = nil
end
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- a new epoch means the numbering restarts: no older entry may survive it
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'bytes', 0)
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  -- the history expired or was removed: nothing is counted any more
  redis.call('HSET', KEYS[1], 'bytes', 0)
end
local added = 0
local result = {epoch}
local lines = {}
local done = false
local count = (#ARGV - 11) / 5
for i = 0, count - 1 do
  local at = 12 + i * 5
  local number = first > 0 and first + i or 0
  if done then
    result[#result + 1] = -2
  elseif number > 0 and number <= stored then
    result[#result + 1] = -1
  else
    local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    local event = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. ARGV[at]  -- bridge/batch.py: event_line
    redis.call('XADD', KEYS[2], seq .. '-0', 'e', event)
    added = added + #event
    stored = math.max(number, stored + 1)
    if ARGV[at + 4] ~= '' and KEYS[4] then
      -- never trimmed here: the backend removes what it has applied (trim_consumed)
      redis.call('XADD', KEYS[4], '*', 'user_id', ARGV[6],
                 'run_id', ARGV[7], 'type', ARGV[at + 1], 'ts', ARGV[at + 2],
                 'payload', ARGV[at + 4])
    end
    -- the run's live state, stored before anyone is sent the event: a reader of the
    -- run's record overlays it until the lifecycle update lands in Postgres
    if ARGV[at + 3] == '1' then
      redis.call('HSET', KEYS[3], 'done', '1', 'end', ARGV[at + 1], 'et', ARGV[at + 2],
                 'ep', ARGV[at + 4])
      done = true
    elseif ARGV[at + 4] ~= '' then
      redis.call('HSET', KEYS[3], 'st', ARGV[at + 2])
    end
    result[#result + 1] = seq
    lines[#lines + 1] = event
  end
end
redis.call('HSET', KEYS[3], 'n', stored)
-- Trim the oldest events while the history is over its length or its bytes: each
-- removed entry is read once (its size comes off the running count), so an emit
-- costs O(1) amortized; the newest event always stays.
local bytes = redis.call('HINCRBY', KEYS[1], 'bytes', added)
if redis.call('HGET', KEYS[1], 'ww') ~= ARGV[9] then
  redis.call('HSET', KEYS[1], 'ww', ARGV[9], 'wb', 0)
end
redis.call('HINCRBY', KEYS[1], 'wb', added)
local maxbytes = tonumber(ARGV[8])
local maxlen = tonumber(ARGV[2])
local length = redis.call('XLEN', KEYS[2])
if bytes > maxbytes or length > maxlen then
  local last = nil
  while (bytes > maxbytes or length > maxlen) and length > 1 do
    local from = last and ('(' .. last) or '-'
    local oldest = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', 64)
    if #oldest == 0 then break end
    for _, entry in ipairs(oldest) do
      if not ((bytes > maxbytes or length > maxlen) and length > 1) then break end
      bytes = bytes - #entry[2][2]
      length = length - 1
      last = entry[1]
    end
  end
  if last then
    local next_seq = tonumber(string.match(last, '^(%d+)-')) + 1
    redis.call('XTRIM', KEYS[2], 'MINID', next_seq .. '-0')
    redis.call('HSET', KEYS[1], 'bytes', math.max(bytes, 0))
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
if #lines > 0 then
  redis.call(ARGV[10], ARGV[4], table.concat(lines, '\n'))  -- batch.py: SEPARATOR
end
return result
