package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nvent/nvent/internal/domain"
)

// eventFields is how many ARGV one event takes in luaAppend, and the fields
// of its stream entry, in this order.
const eventFields = 9

// luaAppend appends a batch to a subject. KEYS: the events stream, the ids
// hash, the outbox. ARGV: the expected seq or "", the subject, the
// correlation id, then eventFields per event (id, type, run, flow, step,
// stepId, attempt, data, ts). It looks every id up first; unless all are
// stored it checks the expected seq against the stream's length (its last
// seq: entries are never removed) and returns {"conflict", last} on a
// mismatch, having written nothing. Otherwise it gives each new event the
// next seq (entry id 0-{seq}), records its id, adds it to the outbox, and
// returns {"ok", last, seq1, fields1, seq2, fields2, …}: fields are the
// stored entry of an event the subject already held, empty for a new one.
const luaAppend = `
local n = (#ARGV - 3) / 9
local last = redis.call('XLEN', KEYS[1])
local stored = {}
local fresh = 0
for i = 1, n do
  local seq = redis.call('HGET', KEYS[2], ARGV[3 + (i - 1) * 9 + 1])
  if seq then
    local e = redis.call('XRANGE', KEYS[1], '0-' .. seq, '0-' .. seq)
    if #e == 0 then
      return redis.error_reply('event ' .. ARGV[3 + (i - 1) * 9 + 1] .. ' is indexed at seq ' .. seq .. ' but not stored')
    end
    stored[i] = {tonumber(seq), e[1][2]}
  else
    stored[i] = false
    fresh = fresh + 1
  end
end
if fresh > 0 and ARGV[1] ~= '' and tonumber(ARGV[1]) ~= last then
  return {'conflict', last}
end
local out = {'ok', last}
local seq = last
for i = 1, n do
  if stored[i] then
    out[#out + 1] = stored[i][1]
    out[#out + 1] = stored[i][2]
  else
    local b = 3 + (i - 1) * 9
    seq = seq + 1
    local f = {'id', ARGV[b + 1], 'type', ARGV[b + 2], 'run', ARGV[b + 3], 'flow', ARGV[b + 4],
      'step', ARGV[b + 5], 'stepId', ARGV[b + 6], 'attempt', ARGV[b + 7], 'data', ARGV[b + 8], 'ts', ARGV[b + 9]}
    redis.call('XADD', KEYS[1], '0-' .. seq, unpack(f))
    redis.call('HSET', KEYS[2], ARGV[b + 1], seq)
    redis.call('XADD', KEYS[3], '*', 'kind', 'append', 'subject', ARGV[2], 'seq', seq, 'corr', ARGV[3], unpack(f))
    out[#out + 1] = seq
    out[#out + 1] = {}
  end
end
return out
`

// eventArgs are e's eventFields ARGV of luaAppend.
func eventArgs(e domain.Event) []any {
	attempt := ""
	if e.Attempt != 0 {
		attempt = strconv.Itoa(e.Attempt)
	}
	return []any{e.ID, e.Type, e.RunID, e.FlowName, e.StepName, e.StepID, attempt, string(e.Data), strconv.FormatInt(e.TS.UnixMilli(), 10)}
}

// Append implements storage.Store in one script (luaAppend): idempotent by
// event id within the subject (the ids hash keeps every id, across
// restarts), gapless seqs, ExpectedSeq checked only when something new is
// written, and every new event added to the outbox in the same step.
func (s *Store) Append(ctx context.Context, subject string, in []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error) {
	evs, err := domain.PrepareAppend(subject, in)
	if err != nil {
		return domain.AppendResult{}, err
	}
	expected := ""
	if opts.ExpectedSeq != nil {
		expected = strconv.FormatInt(*opts.ExpectedSeq, 10)
	}
	args := make([]any, 0, 3+len(evs)*eventFields)
	args = append(args, expected, subject, domain.CorrelationID(ctx))
	for _, e := range evs {
		args = append(args, eventArgs(e)...)
	}
	keys := []string{s.keys.events(subject), s.keys.ids(subject), s.keys.outbox()}
	reply, err := s.scripts.append.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		return domain.AppendResult{}, wrapErr(err, "appending events")
	}
	r := replyOf(reply)
	status, last := r.str(0), r.int(1)
	if status == "conflict" {
		return domain.AppendResult{}, domain.Errorf(domain.CodeConflict, "subject %s is at seq %d; expected seq %d", subject, last, *opts.ExpectedSeq)
	}
	if status != "ok" || len(reply) != 2+2*len(evs) {
		r.fail(fmt.Errorf("unexpected reply %v", reply))
	}
	res := domain.AppendResult{Events: make([]domain.Event, len(evs)), PreviousSeq: last}
	for i, e := range evs {
		seq, fields := r.int(2+2*i), r.list(3+2*i)
		if len(fields) == 0 {
			e.Seq = seq
			res.Events[i] = e
			continue
		}
		f, err := fieldMap(fields)
		if err == nil {
			res.Events[i], err = decodeEvent(subject, seq, f)
		}
		if err != nil {
			r.fail(fmt.Errorf("stored event %s: %w", e.ID, err))
		}
	}
	if r.err != nil {
		return domain.AppendResult{}, fmt.Errorf("error appending events to %s: %w", subject, r.err)
	}
	return res, nil
}

// typeScanChunk is how many events one round trip reads at least when a
// read filters by type, so that a rare type does not take a round trip per
// event.
const typeScanChunk = 256

// Read implements storage.Store with XRANGE (XREVRANGE for Desc) on the
// subject's stream, whose entry ids are the seqs: it reads only the range
// asked for, in chunks, filtering types as it goes.
func (s *Store) Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error) {
	if err := domain.ValidateSubject(subject); err != nil {
		return nil, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, err
	}
	out := []domain.Event{}
	lo := opts.After + 1
	if opts.Before > 0 && opts.Before-1 < lo {
		return out, nil
	}
	start, stop := seqID(lo), "+"
	if opts.Before > 0 {
		stop = seqID(opts.Before - 1)
	}
	chunk := opts.Limit
	if len(opts.Types) > 0 {
		chunk = max(chunk, typeScanChunk)
	}
	key := s.keys.events(subject)
	for {
		var msgs []goredis.XMessage
		if opts.Order == domain.Desc {
			msgs, err = s.client.XRevRangeN(ctx, key, stop, start, int64(chunk)).Result()
		} else {
			msgs, err = s.client.XRangeN(ctx, key, start, stop, int64(chunk)).Result()
		}
		if err != nil {
			return nil, wrapErr(err, "reading events of "+subject)
		}
		for _, m := range msgs {
			seq, err := seqOf(m.ID)
			if err != nil {
				return nil, fmt.Errorf("error reading events of %s: %w", subject, err)
			}
			e, err := decodeEvent(subject, seq, m.Values)
			if err != nil {
				return nil, fmt.Errorf("error reading events of %s: %w", subject, err)
			}
			if len(opts.Types) > 0 && !slices.Contains(opts.Types, e.Type) {
				continue
			}
			out = append(out, e)
			if len(out) == opts.Limit {
				return out, nil
			}
		}
		if len(msgs) < chunk {
			return out, nil
		}
		if last := msgs[len(msgs)-1].ID; opts.Order == domain.Desc {
			stop = "(" + last
		} else {
			start = "(" + last
		}
	}
}

// seqID is the stream entry id of seq.
func seqID(seq int64) string { return "0-" + strconv.FormatInt(seq, 10) }

// seqOf reads the seq from a subject stream's entry id.
func seqOf(id string) (int64, error) {
	rest, ok := strings.CutPrefix(id, "0-")
	if !ok {
		return 0, fmt.Errorf("entry id %q is not 0-{seq}", id)
	}
	return strconv.ParseInt(rest, 10, 64)
}

// decodeEvent builds the event of subject at seq from its stream fields.
func decodeEvent(subject string, seq int64, f map[string]any) (domain.Event, error) {
	get := func(name string) string { v, _ := f[name].(string); return v }
	e := domain.Event{ID: get("id"), Subject: subject, Seq: seq, Type: get("type"), RunID: get("run"),
		FlowName: get("flow"), StepName: get("step"), StepID: get("stepId")}
	data, ts := get("data"), get("ts")
	if e.ID == "" || e.Type == "" || data == "" || ts == "" {
		return domain.Event{}, fmt.Errorf("seq %d lacks one of id, type, data, ts", seq)
	}
	e.Data = json.RawMessage(data)
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return domain.Event{}, fmt.Errorf("seq %d: bad ts %q", seq, ts)
	}
	e.TS = time.UnixMilli(ms).UTC()
	if a := get("attempt"); a != "" {
		if e.Attempt, err = strconv.Atoi(a); err != nil {
			return domain.Event{}, fmt.Errorf("seq %d: bad attempt %q", seq, a)
		}
	}
	return e, nil
}

// fieldMap turns a flat [name, value, …] reply into a map.
func fieldMap(flat []any) (map[string]any, error) {
	if len(flat)%2 != 0 {
		return nil, fmt.Errorf("odd field list of %d items", len(flat))
	}
	m := make(map[string]any, len(flat)/2)
	for i := 0; i < len(flat); i += 2 {
		k, ok := flat[i].(string)
		if !ok {
			return nil, fmt.Errorf("field name %v is not a string", flat[i])
		}
		m[k] = flat[i+1]
	}
	return m, nil
}

// reply reads a script's array reply; the first item of the wrong type
// sets err, and the readers return zero values from then on.
type reply struct {
	items []any
	err   error
}

func replyOf(items []any) *reply { return &reply{items: items} }

func (r *reply) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reply) at(i int) any {
	if i >= len(r.items) {
		r.fail(fmt.Errorf("reply has %d items, want more than %d", len(r.items), i))
		return nil
	}
	return r.items[i]
}

func (r *reply) str(i int) string {
	v, ok := r.at(i).(string)
	if !ok && r.err == nil {
		r.fail(fmt.Errorf("reply item %d is %T, not a string", i, r.items[i]))
	}
	return v
}

func (r *reply) int(i int) int64 {
	v, ok := r.at(i).(int64)
	if !ok && r.err == nil {
		r.fail(fmt.Errorf("reply item %d is %T, not an integer", i, r.items[i]))
	}
	return v
}

func (r *reply) list(i int) []any {
	v, ok := r.at(i).([]any)
	if !ok && r.err == nil {
		r.fail(fmt.Errorf("reply item %d is %T, not a list", i, r.items[i]))
	}
	return v
}

// optStr reads an item that may be nil (a Lua false) as "".
func (r *reply) optStr(i int) string {
	if v := r.at(i); v == nil {
		return ""
	}
	return r.str(i)
}
