package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgWait bounds every wait on the private cluster: pg_ctl's own -t, and the
// poll until it answers.
const pgWait = 30 * time.Second

// PrivatePostgres is a PostgreSQL cluster of the test's own: made with initdb
// in a temporary directory, trust authentication, listening on 127.0.0.1 on a
// free port only (its unix socket in that directory). The test may stop it
// and start it again; it is stopped and removed when the test ends. It never
// touches the shared cluster.
type PrivatePostgres struct {
	URL string // a pgx URL to the database "postgres"

	port    int
	dir     string // the temporary root (owned by the server's OS user)
	data    string // the cluster's data directory
	logFile string
	binDir  string
	asUser  []string // the command prefix that runs a program as the postgres OS user, if any
	running bool
	t       testing.TB
}

// postgresBinDir returns the bin directory of the highest PostgreSQL version
// installed under /usr/lib/postgresql.
func postgresBinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	type install struct {
		version []int
		bin     string
	}
	var found []install
	for _, m := range matches {
		bin := filepath.Dir(m)
		if _, err := os.Stat(filepath.Join(bin, "pg_ctl")); err != nil {
			continue
		}
		var v []int
		for _, part := range strings.Split(filepath.Base(filepath.Dir(bin)), ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				v = nil
				break
			}
			v = append(v, n)
		}
		if v != nil {
			found = append(found, install{v, bin})
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("no initdb and pg_ctl under /usr/lib/postgresql/*/bin")
	}
	sort.Slice(found, func(i, j int) bool {
		a, b := found[i].version, found[j].version
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return len(a) > len(b)
	})
	return found[0].bin, nil
}

// StartPrivatePostgres creates a private cluster and starts it. initdb and
// postgres refuse to run as root, so under root they run as the "postgres"
// OS user (runuser, else setpriv) in a directory it owns.
func StartPrivatePostgres(t testing.TB) *PrivatePostgres {
	t.Helper()
	binDir, err := postgresBinDir()
	if err != nil {
		t.Fatalf("this test starts its own PostgreSQL cluster, and the server is not installed (apt-get install postgresql): %v", err)
	}
	dir, err := os.MkdirTemp("", "nvent-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p := &PrivatePostgres{dir: dir, data: filepath.Join(dir, "data"), logFile: filepath.Join(dir, "postgres.log"), binDir: binDir, t: t}
	t.Cleanup(func() {
		p.Stop()
		_ = os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, this test starts PostgreSQL as the OS user postgres, which does not exist (apt-get install postgresql creates it): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		switch {
		case lookPath("runuser"):
			p.asUser = []string{"runuser", "-u", "postgres", "--"}
		case lookPath("setpriv"):
			p.asUser = []string{"setpriv", "--reuid=" + u.Uid, "--regid=" + u.Gid, "--init-groups", "--"}
		default:
			t.Fatal("running as root, this test needs runuser or setpriv (util-linux) to start PostgreSQL as the user postgres")
		}
	}
	if out, err := p.run(filepath.Join(binDir, "initdb"), "-D", p.data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		t.Fatalf("initdb of a private cluster in %s: %v\n%s", p.data, err, out)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	conf := fmt.Sprintf("\n# a private test cluster\nlisten_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n", p.port, p.dir)
	f, err := os.OpenFile(filepath.Join(p.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	return p
}

func lookPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// run runs a PostgreSQL program (as the postgres OS user when needed),
// bounded in time, and returns its output.
func (p *PrivatePostgres) run(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgWait+30*time.Second)
	defer cancel()
	args = append(append([]string(nil), p.asUser...), args...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

func (p *PrivatePostgres) serverLog() string {
	b, _ := os.ReadFile(p.logFile)
	return string(b)
}

// Start starts the cluster (again) and waits until it answers queries.
func (p *PrivatePostgres) Start() {
	p.t.Helper()
	if p.running {
		return
	}
	out, err := p.run(filepath.Join(p.binDir, "pg_ctl"), "-D", p.data, "-l", p.logFile,
		"-w", "-t", strconv.Itoa(int(pgWait.Seconds())), "start")
	if err != nil {
		p.t.Fatalf("pg_ctl start of the private cluster on port %d: %v\n%s\nserver log:\n%s", p.port, err, out, p.serverLog())
	}
	p.running = true
	deadline := time.Now().Add(pgWait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.URL)
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the private cluster on port %d did not answer within %v: %v\nserver log:\n%s", p.port, pgWait, err, p.serverLog())
		}
		<-tick.C
	}
}

// Stop stops the cluster (pg_ctl -m fast: clients are disconnected) and
// waits until it is down. Stopping a stopped cluster does nothing.
func (p *PrivatePostgres) Stop() {
	if !p.running {
		return
	}
	out, err := p.run(filepath.Join(p.binDir, "pg_ctl"), "-D", p.data, "-m", "fast",
		"-w", "-t", strconv.Itoa(int(pgWait.Seconds())), "stop")
	if err != nil {
		p.t.Errorf("pg_ctl stop of the private cluster on port %d: %v\n%s", p.port, err, out)
		return
	}
	p.running = false
}
