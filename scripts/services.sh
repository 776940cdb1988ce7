#!/usr/bin/env bash
# Makes sure what the tests need is there: PostgreSQL (with a `test`
# database), Redis, NATS (with JetStream) and RabbitMQ up, and Chromium
# installed (for the browser test); the services on the addresses
# NVENT_TEST_POSTGRES_URL, NVENT_TEST_REDIS_URL, NVENT_TEST_NATS_URL and
# NVENT_TEST_AMQP_URL name (defaults: 127.0.0.1:5432, :6379, :4222, :5672).
# It starts a local service that is installed but stopped, or uses
# `docker compose up -d` where a Docker engine runs; otherwise it fails and
# says what is missing. Safe to run again: it leaves running services alone.
set -euo pipefail

PG_HOST=${NVENT_TEST_PG_HOST:-127.0.0.1}
PG_PORT=${NVENT_TEST_PG_PORT:-5432}
REDIS_HOST=${NVENT_TEST_REDIS_HOST:-127.0.0.1}
REDIS_PORT=${NVENT_TEST_REDIS_PORT:-6379}
NATS_HOST=${NVENT_TEST_NATS_HOST:-127.0.0.1}
NATS_PORT=${NVENT_TEST_NATS_PORT:-4222}
AMQP_HOST=${NVENT_TEST_AMQP_HOST:-127.0.0.1}
AMQP_PORT=${NVENT_TEST_AMQP_PORT:-5672}
here=$(cd "$(dirname "$0")/.." && pwd)

say() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port name [seconds, default 30]
	for _ in $(seq 1 $((${4:-30} * 2))); do
		port_open "$1" "$2" && return 0
		sleep 0.5
	done
	say "$3 did not come up on $1:$2 within ${4:-30}s"
	return 1
}

docker_engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

ensure_postgres() {
	if ! port_open "$PG_HOST" "$PG_PORT"; then
		if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
			say "starting the local PostgreSQL cluster"
			pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
		elif docker_engine; then
			say "starting PostgreSQL with docker compose"
			docker compose -f "$here/docker-compose.yml" up -d postgres
		else
			say "PostgreSQL is not reachable on $PG_HOST:$PG_PORT and neither a local cluster (pg_ctlcluster) nor a Docker engine is available to start one."
			say "Install PostgreSQL 13+ (apt-get install postgresql) or point NVENT_TEST_POSTGRES_URL at a server."
			exit 1
		fi
		wait_port "$PG_HOST" "$PG_PORT" PostgreSQL
	fi
	# The tests use the `test` database; create it where we can.
	if command -v psql >/dev/null 2>&1 && [ -z "${NVENT_TEST_POSTGRES_URL:-}" ]; then
		for _ in $(seq 1 20); do
			psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 && break
			sleep 0.5
		done
		if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc "select 1 from pg_database where datname='test'" | grep -q 1; then
			say "creating database test"
			psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qc 'create database test'
		fi
	fi
	say "PostgreSQL is up on $PG_HOST:$PG_PORT"
}

ensure_redis() {
	if ! port_open "$REDIS_HOST" "$REDIS_PORT"; then
		if command -v redis-server >/dev/null 2>&1; then
			say "starting a local redis-server"
			mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
			redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
				--dir /var/lib/redis --logfile /var/log/redis/ci.log
		elif docker_engine; then
			say "starting Redis with docker compose"
			docker compose -f "$here/docker-compose.yml" up -d redis
		else
			say "Redis is not reachable on $REDIS_HOST:$REDIS_PORT and neither redis-server nor a Docker engine is available to start it."
			say "Install Redis 7 (apt-get install redis-server) or point NVENT_TEST_REDIS_URL at a server."
			exit 1
		fi
		wait_port "$REDIS_HOST" "$REDIS_PORT" Redis
	fi
	say "Redis is up on $REDIS_HOST:$REDIS_PORT"
}

ensure_nats() {
	if ! port_open "$NATS_HOST" "$NATS_PORT"; then
		if [ -x /usr/sbin/nats-server ] && command -v start-stop-daemon >/dev/null 2>&1; then
			say "starting a local nats-server with JetStream"
			mkdir -p /var/lib/nats-server 2>/dev/null || true
			start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
				-a 127.0.0.1 -p "$NATS_PORT" -js -sd /var/lib/nats-server -l /var/log/nats-server.log
		elif docker_engine; then
			say "starting NATS with docker compose"
			docker compose -f "$here/docker-compose.yml" --profile brokers up -d nats
		else
			say "NATS is not reachable on $NATS_HOST:$NATS_PORT and neither nats-server nor a Docker engine is available to start it."
			say "Install NATS 2.9+ (apt-get install nats-server) or point NVENT_TEST_NATS_URL at a server with JetStream."
			exit 1
		fi
		wait_port "$NATS_HOST" "$NATS_PORT" NATS
	fi
	say "NATS is up on $NATS_HOST:$NATS_PORT"
}

ensure_rabbitmq() {
	if ! port_open "$AMQP_HOST" "$AMQP_PORT"; then
		if command -v rabbitmq-server >/dev/null 2>&1; then
			say "starting a local rabbitmq-server"
			rabbitmq-server -detached
		elif docker_engine; then
			say "starting RabbitMQ with docker compose"
			docker compose -f "$here/docker-compose.yml" --profile brokers up -d rabbitmq
		else
			say "RabbitMQ is not reachable on $AMQP_HOST:$AMQP_PORT and neither rabbitmq-server nor a Docker engine is available to start it."
			say "Install RabbitMQ 3.8+ (apt-get install rabbitmq-server) or point NVENT_TEST_AMQP_URL at a broker."
			exit 1
		fi
		wait_port "$AMQP_HOST" "$AMQP_PORT" RabbitMQ 90 # the Erlang VM boots slowly
	fi
	say "RabbitMQ is up on $AMQP_HOST:$AMQP_PORT"
}

# The dashboard's browser test drives Debian's Chromium.
ensure_chromium() {
	if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
		return 0
	fi
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		say "installing chromium for the browser test"
		(apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) ||
			say "chromium could not be installed; the browser test will fail and say so"
	else
		say "chromium is missing (apt-get install chromium); the browser test will fail and say so"
	fi
}

ensure_postgres
ensure_redis
ensure_nats
ensure_rabbitmq
ensure_chromium
