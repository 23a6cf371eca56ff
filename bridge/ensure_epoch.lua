-- Return the user's epoch and last seq, creating the epoch when there is none.
-- KEYS[1] meta hash   KEYS[2] history stream   ARGV[1] new epoch   ARGV[2] ttl
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local seq = redis.call('HGET', KEYS[1], 'seq')
return {tonumber(seq) or 0, epoch}
