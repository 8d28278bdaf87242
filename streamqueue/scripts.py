"""Every change of a job's state, as a Lua script that Redis runs atomically.

Why scripts: each step touches several keys (the stream entry, the job's record, the results
stream) and must never be seen half done, by a client or after a crash (a script reaches the
append-only file as one transaction). One module holds them all, both sides', so the state
machine reads in one place::

    submit ──► IN_QUEUE ──take──► IN_PROGRESS ──result──► COMPLETED / FAILED
                  │                   │  └── taken over after the lease (attempt + 1); past
                  │                   │      JOB_MAX_ATTEMPTS: FAILED (poison cap)
                  └──────cancel───────┴──► CANCELLED

A final status never changes: a second result for a job (a run taken over while its first
worker was in fact alive, or a result Redis lost in a crash and a rerun) is counted in
``<name>:stats`` and dropped, so a client sees exactly one. The stream entry of a job is
acknowledged (``XACK``) in the same script that makes its result final, never before.

Statuses are the names in :mod:`streamqueue.layout`, put into the sources once, here.
"""

from __future__ import annotations

from string import Template

from streamqueue import layout

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local FINAL = {['$COMPLETED'] = true, ['$FAILED'] = true, ['$CANCELLED'] = true}
"""


def _lua(body: str) -> str:
    return Template(_COMMON + body).substitute(
        IN_QUEUE=layout.IN_QUEUE, IN_PROGRESS=layout.IN_PROGRESS, COMPLETED=layout.COMPLETED,
        FAILED=layout.FAILED, CANCELLED=layout.CANCELLED,
    )


SUBMIT = _lua("""
-- KEYS: jobs stream, job record. ARGV: job id, job JSON.
-- An id already known changes nothing (a submit whose answer was lost can be sent again).
local status = redis.call('HGET', KEYS[2], 'status')
if status then return {0, status} end
local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'job', ARGV[2])
redis.call('HSET', KEYS[2], 'status', '$IN_QUEUE', 'entry', entry, 'submitted', now_ms())
return {1, entry}
""")

CANCEL = _lua("""
-- KEYS: job record, results stream, cancels stream.
-- ARGV: job id, result TTL (s), results kept, cancels kept.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, false} end
if FINAL[status] then return {0, status} end
redis.call('HSET', KEYS[1], 'status', '$CANCELLED', 'finished', now_ms())
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[1], 'status', '$CANCELLED')
if status == '$IN_PROGRESS' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[1])
end
return {1, status}
""")

TAKE = _lua("""
-- KEYS: jobs stream, stats, results stream.
-- ARGV: 1 group, 2 consumer, 3 count, 4 lease (ms), 5 '1': take over lapsed leases this time,
--   6 most attempts, 7 key prefix, 8 largest entry read (bytes), 9 result TTL (s), 10 results
--   kept, 11 orphan age (ms; 0: do not look), 12 the poison error (%d: runs), 13.. entry ids
--   already delivered to this consumer (then nothing is read here).
-- Takeover claims (XCLAIM) the entries of other consumers idle for a lease, never this
-- consumer's own (a worker late with its heartbeat must not take its own jobs "over" and push
-- them towards the poison cap). Returns {taken, dropped, poisoned, orphan_wait_ms}; each taken
-- is {entry id, job id, job JSON or '' when too large, attempt, size}.
local group, me, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lease, most = tonumber(ARGV[4]), tonumber(ARGV[6])
local found = {}
if #ARGV >= 13 then
  for i = 13, #ARGV do
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if e[1] then table.insert(found, {e[1], 1}) end
  end
else
  if ARGV[5] == '1' then
    local ids, runs = {}, {}
    for _, row in ipairs(redis.call('XPENDING', KEYS[1], group, 'IDLE', lease, '-', '+',
                                    count + 64)) do
      if row[2] ~= me and #ids < count then
        table.insert(ids, row[1])
        runs[row[1]] = row[4] + 1
      end
    end
    if #ids > 0 then
      for _, e in ipairs(redis.call('XCLAIM', KEYS[1], group, me, lease, unpack(ids))) do
        if e and e[1] then table.insert(found, {e, runs[e[1]]}) end
      end
    end
  end
  if #found < count then
    local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count - #found,
                         'STREAMS', KEYS[1], '>')
    if r then
      for _, e in ipairs(r[1][2]) do table.insert(found, {e, 1}) end
    end
  end
end
local taken, dropped, poisoned = {}, {}, {}
local now = now_ms()
for _, item in ipairs(found) do
  local e, runs = item[1], item[2]
  local id, body = nil, nil
  local fields = e[2] or {}
  for i = 1, #fields, 2 do
    if fields[i] == 'id' then id = fields[i + 1]
    elseif fields[i] == 'job' then body = fields[i + 1] end
  end
  if not id or id == '' then
    redis.call('XACK', KEYS[1], group, e[1])
    table.insert(dropped, e[1])
  else
    local key = ARGV[7] .. 'job:' .. id
    local status = redis.call('HGET', key, 'status')
    if status and FINAL[status] then
      redis.call('XACK', KEYS[1], group, e[1])
      redis.call('HINCRBY', KEYS[2], 'stale_entries', 1)
    elseif runs > most then
      local err = string.format(ARGV[12], runs - 1)
      redis.call('HSET', key, 'status', '$FAILED', 'finished', now, 'attempt', runs - 1,
                 'result', cjson.encode({error = err}))
      redis.call('EXPIRE', key, ARGV[9])
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', 'id', id, 'status', '$FAILED')
      redis.call('XACK', KEYS[1], group, e[1])
      redis.call('HINCRBY', KEYS[2], 'poisoned', 1)
      table.insert(poisoned, {id, runs - 1})
    else
      redis.call('HSET', key, 'status', '$IN_PROGRESS', 'worker', me, 'attempt', runs,
                 'started', now)
      redis.call('HSETNX', key, 'entry', e[1])
      redis.call('HSETNX', key, 'submitted', now)
      local size = body and #body or 0
      if size > tonumber(ARGV[8]) then body = '' end
      table.insert(taken, {e[1], id, body or '', runs, size})
    end
  end
end
local orphan_wait = -1
if #taken == 0 and tonumber(ARGV[11]) > 0 then
  local age = tonumber(ARGV[11])
  local p = redis.call('XPENDING', KEYS[1], group, 'IDLE', age, '-', '+', 16)
  for _, row in ipairs(p) do
    if row[2] ~= me then
      local wait = math.max(0, lease - row[3])
      if orphan_wait < 0 or wait < orphan_wait then orphan_wait = wait end
    end
  end
end
return {taken, dropped, poisoned, orphan_wait}
""")

RENEW = _lua("""
-- KEYS: jobs stream. ARGV: group, consumer, entry ids this worker holds.
-- Resets the idle time of the entries still this consumer's (XCLAIM JUSTID: the delivery
-- count is not raised). Returns {renewed, taken over by another consumer, no longer pending}.
local kept, lost, gone = {}, {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if not p[1] then table.insert(gone, ARGV[i])
  elseif p[1][2] ~= ARGV[2] then table.insert(lost, ARGV[i])
  else table.insert(kept, ARGV[i]) end
end
if #kept > 0 then
  local args = {KEYS[1], ARGV[1], ARGV[2], 0}
  for _, id in ipairs(kept) do table.insert(args, id) end
  table.insert(args, 'JUSTID')
  redis.call('XCLAIM', unpack(args))
end
return {kept, lost, gone}
""")

RESULT = _lua("""
-- KEYS: job record, results stream, jobs stream, stats, progress stream, chunks stream.
-- ARGV: 1 group, 2 status, 3 result JSON, 4 result TTL (s), 5 consumer, 6 results kept,
--   7 job id, 8.. entry ids this worker holds for the job.
-- The first final result stands; a later one is counted and dropped. Returns
-- {1 when this result was written, the status before}.
local current = redis.call('HGET', KEYS[1], 'status')
local written = 0
if current and FINAL[current] then
  if current == '$CANCELLED' then
    redis.call('HINCRBY', KEYS[4], 'late_after_cancel', 1)
  else
    redis.call('HINCRBY', KEYS[4], 'duplicate_results', 1)
  end
else
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'result', ARGV[3], 'finished', now_ms(),
             'worker', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[5], ARGV[4])
  redis.call('EXPIRE', KEYS[6], ARGV[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[7], 'status', ARGV[2])
  written = 1
end
local entry = redis.call('HGET', KEYS[1], 'entry')
if entry then redis.call('XACK', KEYS[3], ARGV[1], entry) end
for i = 8, #ARGV do redis.call('XACK', KEYS[3], ARGV[1], ARGV[i]) end
return {written, current or false}
""")

MAINTAIN = _lua("""
-- KEYS: jobs stream. ARGV: group, consumer idle time after which one holding nothing is
-- removed (ms). Trims the entries every worker is done with (older than the oldest pending
-- one and already delivered) and removes consumers of workers long gone that hold nothing.
-- Returns {consumers removed, the id trimmed below}.
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if pending == 0 and idle and idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'last-delivered-id' then delivered = g[i + 1] end
  end
  if name == ARGV[1] then last = delivered end
end
if not last then return {removed, false} end
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
local below = last
if summary[1] > 0 then below = summary[2] end
redis.call('XTRIM', KEYS[1], 'MINID', '~', below)
return {removed, below}
""")
