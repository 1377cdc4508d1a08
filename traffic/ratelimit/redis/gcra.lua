-- GCRA in one step, atomically, on Redis' clock: ratelimit.gcra in
-- microseconds. Keep the two in step.
--
-- KEYS[1]  the key; its value is the TAT in microseconds since the Unix
--          epoch, and it expires when the TAT passes (an idle key).
-- ARGV[1]  T, the emission interval, microseconds
-- ARGV[2]  Burst
-- ARGV[3]  n, the units asked for, 0 <= n <= Burst
--
-- Returns {allowed (0 or 1), remaining, retry_after_us, reset_after_us}.
--
-- Lua numbers are doubles: microseconds since the epoch (about 2^51 today)
-- plus a tolerance of at most 100 years stay exact below 2^53.

-- Redis 3.2-4 replicate scripts verbatim and refuse writes after TIME
-- unless told to replicate effects; from 5 this is the default and a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tau = burst * t

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end

local nxt = tat + n * t
local allow_at = nxt - tau
if allow_at > now then
  return {0, math.floor((tau - (tat - now)) / t), allow_at - now, tat - now}
end
if nxt > now then
  -- %d, not tostring: tostring keeps 14 digits and would round the TAT.
  redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))
end
return {1, math.floor((tau - (nxt - now)) / t), 0, nxt - now}
