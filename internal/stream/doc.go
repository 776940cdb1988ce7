// Package stream is nvent's cross-instance stream: a Watermill Publisher and
// Subscriber over topics and patterns, with five backends: Memory (one
// process), Redis Streams (watermill-redisstream for writes and group reads,
// its own XREAD for broadcast reads), NATS JetStream (nats.go), RabbitMQ
// (amqp.go) and Postgres tables (postgres.go, watermill-sql). The sections
// below describe the Redis backend; each other backend's file says how it
// maps channels, delivery modes and poison onto its broker, and the README's
// "Choosing a stream backend" compares their guarantees.
//
// # Messages
//
// A stream message is the JSON object {type, topic, data, timestamp,
// instanceId, eventId} (Message, Encode, Decode). Publishing a Watermill
// message sends its payload as data, its UUID as eventId, its "type" and
// "timestamp" metadata as type and timestamp; a delivered message has the
// same UUID and payload and carries topic, type, timestamp and instanceId in
// metadata (FromWatermill rebuilds the Message). Delivery is at least once:
// consumers deduplicate on eventId.
//
// # Topics, channels and physical streams
//
// Redis Streams have no wildcards, so topics are not streams. A topic's
// channel is its first segment (text before the first ':'), and each channel
// is one physical stream named KeyPrefix+channel:
//
//	store-sync:append:{subject}         → nvent:store-sync
//	store-sync:save|delete:{coll}:{id}  → nvent:store-sync
//	store-sync:kv:{key}                 → nvent:store-sync
//	flow:event:{runId}                  → nvent:flow
//	flow:trigger:{flowName}             → nvent:flow
//	client:flow:{runId}, client:ui:{n}  → nvent:client
//	poison:{channel}                    → nvent:poison
//	anything:else                       → nvent:anything
//
// The real topic travels inside the message and subscribers filter on it.
// A topic of a channel nobody planned for simply gets a stream of its own
// (trimmed at Layout.DefaultMaxLen); it is never rejected or mixed into
// another channel.
//
// # Patterns
//
// A subscription takes a topic or a pattern in which '*' matches any run of
// characters, colons included, as in Redis PSUBSCRIBE ("store-sync:append:*"
// receives every append). Matching is linear in the topic's length whatever
// the pattern (Pattern). A pattern whose first segment is spelled out
// ("flow:*") reads that channel's stream only; any other pattern ("*",
// "*:flow:*") reads every stream in Layout.Channels (default store-sync,
// flow, client) and filters; topics of other channels are reached by naming
// their channel ("poison:*", "custom:*"). Messages that do not match are
// acked and skipped, so a narrow pattern on a busy channel reads the whole
// channel; choose channels accordingly.
//
// # Delivery modes
//
// ModeBroadcast (store-sync, client messages: every instance sees
// everything) reads with plain XREAD, up to 256 entries per round trip
// (watermill-redisstream's fan-out mode reads one), not a consumer group
// per instance. Broadcast consumers are caches and
// browser fan-out whose true position is the per-subject seq in the store:
// after a restart they start at the stream's end and replay what they missed
// from the store. A group per instance would need a stable instance id and a
// group per subscription (two subscriptions of one instance must each see
// every message), would leave an abandoned group and its pending list in
// Redis for every restart with a random id, and would cost an XACK round trip
// per message per instance for nothing. A broadcast read starts after the
// stream's last entry as it was when Subscribe ran (looked up with XREVRANGE,
// so nothing added after Subscribe returned is missed), or at the oldest
// retained entry with StartOldest.
//
// ModeCompeting (work: flow events that drive orchestration, triggers)
// uses a Redis consumer group shared by all instances: each entry goes to one
// member, is acked after the handler acks it, and an entry whose member died
// is claimed by another member once it has been idle for
// RedisConfig.MaxIdleTime (checked every ClaimInterval). The group's position
// lives in Redis, so work survives restarts of all members. The Redis group
// is named Group+"@"+pattern: the same group name with different patterns
// forms different groups, which keeps one pattern from acking (and so
// stealing) the other's messages. A new group starts at the stream's end
// (StartOldest: at its start); if the group disappears (Redis restarted
// without persistence, XGROUP DESTROY), the subscription re-creates it at
// the stream's start. On Memory, the members of a group share one position
// and an entry left unacked by a member that ends goes to another at once.
//
// # Poison
//
// watermill-redisstream ends a subscription when its Unmarshaller fails, so
// ours never fails: an entry that cannot be decoded (written by someone else
// with XADD, or corrupted) becomes a message marked as poison, which the
// Subscriber reports on "poison:{channel}" (a PoisonReport with the raw
// fields and the reason), acks, and skips. Every subscription reading the
// entry reports it; the reports share an eventId.
//
// # Trimming
//
// Every XADD trims its stream with MAXLEN ~ (Layout.MaxLen per channel;
// defaults 100k for store-sync and client, 500k for flow, 10k for poison,
// 100k otherwise). The store is the source of truth and the stream a cache of
// recent history: a consumer that falls behind the trimmed window sees a gap
// in seq and replays from the store. Trimming ignores consumer groups, so it
// can also drop entries a competing group has not read yet; the flow channel
// keeps a longer history for that reason, and work consumers must still
// reconcile from the store after long outages.
//
// # Watermill-redisstream pitfalls handled here
//
// Publisher, Subscriber and every subscription each get their own go-redis
// client, because redisstream's Close closes the client it was given. Reads
// never block indefinitely (DisableIndefiniteInitialBlock), so closing never
// leaves a blocked connection behind. The fan-out "$" start is replaced by a
// concrete id (see above). A read error after Close ends the read at once
// instead of retrying.
//
// # Batches
//
// A Batch queues messages for a Publisher and writes them in order with one
// round trip per Flush (Redis: one pipeline of XADDs). The stream
// coordinator publishes through one, and the producer of its bus messages
// (the relay) flushes before it checkpoints.
//
// # Building
//
// New builds a Stream from Config (Backend "memory", "redis", "nats", "amqp"
// or "postgres", the backend's URL,
// KeyPrefix, MaxLen, InstanceID, …); Stream.NewPublisher and
// Stream.NewSubscriber(Broadcast() or Competing(group)) build the Watermill
// pieces. There is no global state: two Streams in one process are
// independent, and two Redis Streams with the same KeyPrefix are two
// instances of one deployment.
package stream
