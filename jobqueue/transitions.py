"""A job's state changes as one Lua script each: read, decide, write and announce in one call.

A change is atomic because Redis runs a script alone (no ``WATCH`` to retry, no read
before the transaction): the record is read, the change applied only if the job's state
is one of those allowed, and the change announced on the job's events channel after the
data is written. Leaving the queue releases the job's backlog share; a terminal state
deletes the inputs and starts the result TTL of the record, its frames and its request id.

Two kinds of change: ``set`` writes the fields given (ending a job, the cancel flag), and
``start`` decides as ``JobStore.mark_running`` says (expired in the queue, cancel asked,
or running as the next attempt). ``JobStore`` builds the arguments (``transition_args``)
and reads the answer: ``changed``, ``refused`` (its state was not allowed) or ``gone``
(no record). The script reads only the record's fields it decides on: a caller that
needs the record as changed reads it with plain commands in the same transaction
(``JobStore``), as a script pays for every value it converts to and from Lua.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from maskfarm.core.jobs import ErrorCode, JobState
from maskfarm.jobqueue import records
from maskfarm.jobqueue.keys import Keys

TRANSITION = """
local names = {'state', 'queue_deadline', 'created_at', 'cancel_requested', 'started_at', 'attempts',
               'input_bytes', 'result_ttl', 'request_id'}
local values = redis.call('HMGET', KEYS[1], unpack(names))
if not values[1] then
    return 'gone'
end
local job = {}
for i = 1, #names do
    job[names[i]] = values[i]
end
local function listed(list, value)
    for item in string.gmatch(list, '[^,]+') do
        if item == value then
            return true
        end
    end
    return false
end
local before = job['state']
if not listed(ARGV[2], before) then
    return 'refused'
end
local now = ARGV[4]
local function finished(state, code, message)
    return {'state', state, 'finished_at', now, 'error_code', code, 'error_message', message}
end
local update = {}
if ARGV[1] == 'start' then
    if before == 'queued' and tonumber(now) > tonumber(job['queue_deadline']) then
        local waited = math.floor(tonumber(job['queue_deadline']) - tonumber(job['created_at']) + 0.5)
        update = finished('failed', ARGV[9], (string.gsub(ARGV[10], '{waited}', waited)))
    elseif job['cancel_requested'] == '1' then
        update = finished('cancelled', '', '')
    else
        local started = job['started_at']
        if started == '' then
            started = now
        end
        update = {'state', 'running', 'started_at', started, 'attempts', tostring(tonumber(job['attempts']) + 1),
                  'provenance', ARGV[8]}
    end
else
    for i = 8, #ARGV do
        update[#update + 1] = ARGV[i]
    end
end
local after = before
for i = 1, #update, 2 do
    if update[i] == 'state' then
        after = update[i + 1]
    end
end
redis.call('HSET', KEYS[1], unpack(update))
if before == 'queued' and after ~= 'queued' then
    redis.call('DECRBY', KEYS[4], job['input_bytes'])
    redis.call('HDEL', KEYS[5], ARGV[6])
    redis.call('ZREM', KEYS[6], ARGV[6])
end
if listed(ARGV[3], after) then
    local ttl = job['result_ttl']
    redis.call('DEL', KEYS[7])
    for k = 1, 3 do
        redis.call('EXPIRE', KEYS[k], ttl)
    end
    redis.call('EXPIRE', KEYS[8], ttl)
    if job['request_id'] ~= '' then
        redis.call('EXPIRE', ARGV[7] .. job['request_id'], ttl)
    end
end
redis.call('PUBLISH', ARGV[5], '{"state": "' .. after .. '"}')
return 'changed'
"""
"""KEYS: job, done, failed, backlog bytes, backlog jobs, queued, inputs, masks. ARGV: kind
(``set`` or ``start``), allowed states and terminal states (comma separated), now (epoch
seconds as text), events channel, job id, request key prefix; then for ``set`` the fields
to write as name/value pairs, for ``start`` the provenance (JSON), the expired error code
and message (``records.EXPIRY_MESSAGE``). It reads only the fields it decides on, not the
whole record (whose frame names grow with the job)."""

_TERMINAL = ",".join(state.value for state in JobState if state.is_terminal)


def transition_keys(keys: Keys, job_id: str) -> list[str]:
    """The ``TRANSITION`` script's keys for ``job_id``."""
    return [
        keys.job(job_id),
        keys.done(job_id),
        keys.failed(job_id),
        keys.backlog_bytes(),
        keys.backlog_jobs(),
        keys.queued(),
        keys.inputs(job_id),
        keys.masks(job_id),
    ]


def transition_args(
    keys: Keys,
    job_id: str,
    allowed: Collection[JobState],
    now: float,
    *,
    fields: Mapping[str, str] | None = None,
    provenance: str = "",
) -> list[str]:
    """The ``TRANSITION`` script's arguments: writing ``fields`` (kind ``set``) or, without
    them, starting a run with ``provenance`` (kind ``start``)."""
    head = [
        "set" if fields is not None else "start",
        ",".join(state.value for state in allowed),
        _TERMINAL,
        repr(now),
        keys.events(job_id),
        job_id,
        keys.request(""),
    ]
    if fields is not None:
        return head + [item for pair in fields.items() for item in pair]
    return head + [provenance, ErrorCode.EXPIRED.value, records.EXPIRY_MESSAGE]
