// Package pgtest starts a private PostgreSQL cluster for a test: initdb and
// pg_ctl (Debian's postgresql 15, or whatever PGTEST_BIN names) as an
// unprivileged user in a fresh temporary directory, listening on a random
// loopback port, never the system cluster. The cluster is stopped and its
// postmaster killed by PID when the test ends.
//
// Without PostgreSQL a test that asks for a cluster skips with a message
// saying what is missing; with SECURECALL_INTEROP=1 it fails instead.
package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DefaultBin is where Debian installs PostgreSQL 15's server programs.
const DefaultBin = "/usr/lib/postgresql/15/bin"

// Cluster is a running private PostgreSQL cluster.
type Cluster struct {
	// Dir holds the data directory, the socket and the log.
	Dir string
	// Port is the loopback TCP port.
	Port int
	bin  string
	user string // the user the cluster runs as, "" for the current one
}

// Unavailable explains why no cluster can be started here, or is nil.
func Unavailable() error {
	bin := bin()
	for _, p := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			return fmt.Errorf("PostgreSQL server programs not found in %s (install Debian's postgresql, or set PGTEST_BIN): %w", bin, err)
		}
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("nobody"); err != nil {
			return fmt.Errorf("running as root, and there is no user nobody to run PostgreSQL as: %w", err)
		}
		if _, err := exec.LookPath("su"); err != nil {
			return fmt.Errorf("running as root, and su is missing: %w", err)
		}
	}
	return nil
}

func bin() string {
	if b := os.Getenv("PGTEST_BIN"); b != "" {
		return b
	}
	return DefaultBin
}

// Need skips t (or fails it under SECURECALL_INTEROP=1) when no cluster
// can be started.
func Need(t testing.TB) {
	t.Helper()
	err := Unavailable()
	if err == nil {
		return
	}
	if os.Getenv("SECURECALL_INTEROP") == "1" {
		t.Fatalf("SECURECALL_INTEROP=1 but: %v", err)
	}
	t.Skipf("skipped: %v (SECURECALL_INTEROP=1 makes this a failure)", err)
}

// Start initialises and starts a cluster for t, stopped when t ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	Need(t)
	dir, err := os.MkdirTemp("", fmt.Sprintf("pgtest-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: dir, bin: bin()}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root.
		c.user = "nobody"
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { c.remove(t) })
	if out, err := c.run("initdb", "-D", c.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	c.Port = freePort(t)
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *Cluster) data() string { return filepath.Join(c.Dir, "data") }

// run runs one of PostgreSQL's programs as the cluster's user.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.user == "" {
		cmd = exec.Command(path, args...)
	} else {
		q := []string{shellQuote(path)}
		for _, a := range args {
			q = append(q, shellQuote(a))
		}
		cmd = exec.Command("su", "-s", "/bin/sh", c.user, "-c", strings.Join(q, " "))
	}
	cmd.Dir = c.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (c *Cluster) opts() string {
	// fsync stays on: the fault tests rely on what a commit promises.
	return fmt.Sprintf("-k %s -p %d -c listen_addresses=127.0.0.1 -c max_connections=200", c.Dir, c.Port)
}

func (c *Cluster) start() error {
	out, err := c.run("pg_ctl", "-D", c.data(), "-o", c.opts(), "-w", "-t", "60", "-l", filepath.Join(c.Dir, "log"), "start")
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, c.Log())
	}
	return nil
}

// Restart stops the cluster with a fast shutdown (every session is
// disconnected) and starts it again on the same port.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	out, err := c.run("pg_ctl", "-D", c.data(), "-o", c.opts(), "-m", "fast", "-w", "-t", "60", "-l", filepath.Join(c.Dir, "log"), "restart")
	if err != nil {
		t.Fatalf("pgtest: pg_ctl restart: %v\n%s\n%s", err, out, c.Log())
	}
}

// DSN is the connection string of database db on the cluster.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// CreateDatabase creates database name with the createdb program and
// returns its DSN.
func (c *Cluster) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	out, err := c.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres", name)
	if err != nil {
		t.Fatalf("pgtest: createdb %s: %v\n%s", name, err, out)
	}
	return c.DSN(name)
}

// Log returns the cluster's server log.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "log"))
	return string(b)
}

// PID returns the postmaster's process id, or 0 if it is not running.
func (c *Cluster) PID() int {
	b, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// remove stops the cluster, kills its postmaster by PID if it did not
// stop, and deletes its directory.
func (c *Cluster) remove(t testing.TB) {
	pid := c.PID()
	if pid != 0 {
		if out, err := c.run("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "-t", "20", "stop"); err != nil {
			t.Logf("pgtest: pg_ctl stop: %v\n%s", err, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			// A postmaster that did not stop is killed by its PID, never
			// by name.
			syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Logf("pgtest: remove %s: %v", c.Dir, err)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
