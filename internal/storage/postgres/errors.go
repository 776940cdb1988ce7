package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/nvent/nvent/internal/domain"
)

// wrapErr is the adapter's error boundary. It passes *domain.Error values
// through, classifies failures to reach Postgres as domain.CodeUnavailable
// (message "store unavailable", the cause kept for the logs), and wraps
// anything else as "error <op>: <cause>", which the edges report as internal
// without showing its text.
func wrapErr(err error, op string) error {
	if err == nil {
		return nil
	}
	var de *domain.Error
	if errors.As(err, &de) {
		return err
	}
	wrapped := fmt.Errorf("error %s: %w", op, err)
	if unavailable(err) {
		return domain.Wrap(domain.CodeUnavailable, wrapped, "store unavailable")
	}
	return wrapped
}

// unavailable reports whether err means Postgres could not be reached, did
// not answer in time (or before the caller gave up: context canceled), was
// closed, or turned the statement away for a passing reason (shutdown, too
// many connections, serialization failure, deadlock), as opposed to a
// statement that fails by itself: a retry later may succeed.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, puddle.ErrClosedPool) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	// SafeToRetry: the error happened before anything reached the server.
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if len(pgErr.Code) < 2 {
			return false
		}
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"40", // transaction rollback: serialization failure, deadlock
			"53", // insufficient resources: too many connections, disk full
			"57", // operator intervention: shutdown, query canceled (statement timeout)
			"58": // system error: I/O
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}
