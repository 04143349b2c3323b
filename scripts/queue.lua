-- The fair queue of waiting Lock calls (wait.go), prepended to the acquire
-- and release scripts. A waiting Lock registers on every node that refuses
-- it, in a sorted set per lock key ranked by the time its call began (ties
-- by its id), with the entry's expiry, in the node's time, in a second sorted
-- set. A free key is granted only to the first live waiter (or to anyone,
-- when nobody waits), and a release names that waiter, so that of the
-- waiters of several Clients only the next one wakes, and the nodes agree on
-- it instead of splitting the vote. An entry lives as long as its waiter may
-- sleep before its next attempt (which renews it) plus a grace, so a waiter
-- that crashed holds the others up for at most that. Safety does not depend
-- on the queue: it only ever adds refusals.

-- queue_now returns the node's time in milliseconds.
local function queue_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- queue_prune drops the expired entries of queue q (expiries in qx) and
-- returns the node's time in milliseconds: now if given, else read.
local function queue_prune(q, qx, now)
  now = now or queue_now()
  local gone = redis.call('ZRANGEBYSCORE', qx, '-inf', now)
  for i = 1, #gone, 256 do
    local j = math.min(i + 255, #gone)
    redis.call('ZREM', q, unpack(gone, i, j))
    redis.call('ZREM', qx, unpack(gone, i, j))
  end
  return now
end

-- queue_next returns the id of the first live waiter in q, or '', and the
-- first one after it of another Client (whose id starts with another
-- 8-character prefix), or ''. now is the node's time in milliseconds if
-- the caller has it (and then knows that q exists), or nil.
local function queue_next(q, qx, now)
  if not now and redis.call('EXISTS', q) == 0 then
    return '', ''
  end
  queue_prune(q, qx, now)
  local ids = redis.call('ZRANGE', q, 0, 7)
  local first = ids[1] or ''
  for i = 2, #ids do
    if string.sub(ids[i], 1, 8) ~= string.sub(first, 1, 8) then
      return first, ids[i]
    end
  end
  return first, ''
end

-- queue_keep sets the expiry of waiter id's entry (already in q): it lives
-- as long as the waiter may sleep before its next attempt, min(wait, cap)
-- (wait -1: unknown), plus grace; the sets live at least as long as their
-- longest entry may. When their TTL must grow, it grows by a quarter more,
-- so that the renewals that follow within that quarter (one per handoff
-- on a busy key) need not touch it.
local function queue_keep(q, qx, id, now, wait, cap, grace)
  local life = tonumber(cap)
  if wait >= 0 and wait < life then
    life = wait
  end
  life = life + tonumber(grace)
  redis.call('ZADD', qx, now + life, id)
  if redis.call('PTTL', q) < life then
    life = life + math.floor(life / 4)
    redis.call('PEXPIRE', q, life)
    redis.call('PEXPIRE', qx, life)
  end
end

-- queue_turn decides whether the caller may take the key now. v is the key's
-- value (false: absent; never the caller's token). It returns nil when the
-- key is free and the caller is first in line (its entry is removed), and
-- otherwise how long in ms the caller may have to wait: the holder's PTTL (-1
-- for a key without TTL) or, for a free key reserved for another waiter, the
-- remaining life of that waiter's entry. id is the waiter's id ('' for
-- TryLock, which never registers), rank its rank, cap the longest the waiter
-- sleeps between attempts, grace the time an attempt may take on top (all
-- decimal strings; cap and grace in ms).
local function queue_turn(lock, q, qx, v, id, rank, cap, grace)
  if redis.call('EXISTS', q) == 0 and (v == false or id == '') then
    if v == false then
      return nil
    end
    return redis.call('PTTL', lock)
  end
  local now = queue_prune(q, qx)
  local first
  if id == '' then
    first = redis.call('ZCARD', q) == 0
  else
    redis.call('ZADD', q, 'LT', rank, id)
    first = redis.call('ZRANK', q, id) == 0
  end
  if v == false and first then
    if id ~= '' then
      redis.call('ZREM', q, id)
      redis.call('ZREM', qx, id)
    end
    return nil
  end
  local wait
  if v then
    wait = redis.call('PTTL', lock)
  else
    local head = redis.call('ZRANGE', q, 0, 0)[1]
    wait = tonumber(redis.call('ZSCORE', qx, head) or (now + tonumber(cap))) - now
  end
  if id ~= '' then
    queue_keep(q, qx, id, now, wait, cap, grace)
  end
  return wait
end

-- queue_behind registers waiter id (rank) as well: the next waiting call of
-- the caller's Client, which will wait behind the caller without an attempt
-- of its own (wait.go). wait is how long it may have to sleep: the caller's
-- ttl if the caller got the key, else the caller's wait. now is the node's
-- time in milliseconds.
local function queue_behind(q, qx, id, rank, wait, cap, grace, now)
  redis.call('ZADD', q, 'LT', rank, id)
  queue_keep(q, qx, id, now, wait, cap, grace)
end

