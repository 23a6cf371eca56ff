-- Append one event to a user's history and publish it, atomically.
-- KEYS[1] meta hash (seq, epoch)   KEYS[2] history stream   KEYS[3] lifecycle stream
-- KEYS[4] the run's hash (n: events stored for the run, done: a terminal event stored)
-- ARGV[1] event body: a JSON object without its opening brace
-- ARGV[2] epoch to use if the user has none yet   ARGV[3] history max length
-- ARGV[4] ttl of the user's keys in seconds        ARGV[5] live channel
-- ARGV[6] the event's number within its run (1, 2, ...; 0: append, no duplicate check)
-- ARGV[7] "1" for a terminal event   ARGV[8] "1" when it also goes to KEYS[3]
-- ARGV[9..] the lifecycle entry's fields and values
-- Returns {seq, epoch}; {-1, ''} for a duplicate (this number was stored before: a
-- retried emit whose first attempt succeeded); {-2, ''} when the run already ended.
if redis.call('HGET', KEYS[4], 'done') == '1' then
  return {-2, ''}
end
local number = tonumber(ARGV[6])
local stored = tonumber(redis.call('HGET', KEYS[4], 'n') or '0')
if number > 0 and number <= stored then
  return {-1, ''}
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- a new epoch means the numbering restarts: no older entry may survive it
  redis.call('DEL', KEYS[2])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local event = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. ARGV[1]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', event)
redis.call('HSET', KEYS[4], 'n', math.max(number, stored + 1))
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[4], 'done', '1')
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[4])
if ARGV[8] == '1' then
  local fields = {}
  for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', unpack(fields))
end
redis.call('PUBLISH', ARGV[5], event)
return {seq, epoch}
