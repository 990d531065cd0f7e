// Package dbtest starts throwaway MariaDB and PostgreSQL servers for tests:
// real Debian binaries, a data directory in a fresh temp dir, a free
// 127.0.0.1 port, started and stopped by process id (never by name), so
// tests running in parallel and other engineers' servers are left alone.
//
// It lives outside internal/ so the e2e module uses it too. It is not a
// fixture library: it hands back a connection URL and nothing
// else. A test that needs a database the binaries of which are missing is
// skipped with the package to install (scripts/deps.sh installs them).
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the mysql driver, for readiness
	_ "github.com/jackc/pgx/v5/stdlib" // the pgx driver, for readiness
)

// Server is one running database server.
type Server struct {
	// URL is the connection URL in the form the consumer and diff take:
	// mysql://root@127.0.0.1:PORT/test or postgres://postgres@127.0.0.1:PORT/test.
	URL string
	// DSN is the database/sql data source name for the driver ("mysql" or
	// "pgx").
	DSN string
	// Driver is the database/sql driver name.
	Driver string
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir holds the data directory and the server log.
	Dir string

	cmd     *exec.Cmd
	logPath string
	stop    sync.Once
}

// Open opens a database/sql handle to the server's test database.
func (s *Server) Open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open(s.Driver, s.DSN)
	if err != nil {
		t.Fatalf("dbtest: open %s: %v", s.URL, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Log returns the server's log so far, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// Stop stops the server by its pid: SIGTERM, then SIGKILL after 10 s.
// It is registered as a test cleanup, so calling it is optional.
func (s *Server) Stop() {
	s.stop.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	})
}

// Binaries of Debian's packages.
const (
	mariadbd       = "/usr/sbin/mariadbd"
	mariadbInstall = "/usr/bin/mariadb-install-db"
	pgBin          = "/usr/lib/postgresql/15/bin"
)

// StartMariaDB starts a MariaDB server with an empty database "test"
// (utf8mb4, binary collation) and stops it when the test ends. Grant
// tables are skipped: any user name connects, without a password.
func StartMariaDB(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(mariadbd); err != nil {
		t.Skipf("dbtest: %s missing: install the mariadb-server package (scripts/deps.sh)", mariadbd)
	}
	dir := tempDir(t, "dbtest-mariadb-")
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "mariadb.log")
	// Each server gets its own tmpdir: mariadbd deletes every "#sql*" file
	// in its tmpdir at start-up, so servers sharing /tmp (tests of several
	// packages run at once) delete each other's temporary tables.
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	install := exec.Command(mariadbInstall, "--no-defaults", "--datadir="+data, "--user="+currentUser(),
		"--tmpdir="+tmp,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("dbtest: mariadb-install-db: %v\n%s", err, out)
	}
	port := freePort(t)
	cmd := exec.Command(mariadbd, "--no-defaults", "--datadir="+data, "--user="+currentUser(),
		"--tmpdir="+tmp, "--bind-address=127.0.0.1", "--port="+strconv.Itoa(port),
		"--socket="+filepath.Join(dir, "mysqld.sock"), "--pid-file="+filepath.Join(dir, "mysqld.pid"),
		"--log-error="+logPath, "--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin",
		"--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
		"--innodb-buffer-pool-size=128M", "--innodb-log-file-size=48M",
		"--innodb-flush-log-at-trx-commit=2", "--innodb-doublewrite=0",
		"--max-allowed-packet=256M", "--sql-mode=STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION")
	s := &Server{
		Port: port, Dir: dir, Driver: "mysql", logPath: logPath,
		URL: fmt.Sprintf("mysql://root@127.0.0.1:%d/test", port),
		DSN: fmt.Sprintf("root@tcp(127.0.0.1:%d)/test", port),
	}
	start(t, s, cmd)
	admin := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)
	waitReady(t, s, "mysql", admin, "CREATE DATABASE test CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
	return s
}

// StartPostgres starts a PostgreSQL 15 server with an empty database
// "test" (UTF8, C collation, trust authentication) and stops it when the
// test ends. When the test runs as root the server runs as the postgres
// user, because PostgreSQL refuses root.
func StartPostgres(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Skipf("dbtest: %s missing: install the postgresql-15 package", pgBin)
	}
	dir := tempDir(t, "dbtest-postgres-")
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "postgres.log")
	cred := pgCredential(t, dir)
	initdb := exec.Command(filepath.Join(pgBin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("dbtest: initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	cmd := exec.Command(filepath.Join(pgBin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=50", "-c", "logging_collector=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	s := &Server{
		Port: port, Dir: dir, Driver: "pgx", logPath: logPath,
		URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/test?sslmode=disable", port),
		DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/test?sslmode=disable", port),
	}
	start(t, s, cmd)
	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	waitReady(t, s, "pgx", admin, "CREATE DATABASE test ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
	return s
}

func start(t testing.TB, s *Server, cmd *exec.Cmd) {
	t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL // a killed test leaves no server behind
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("dbtest: start %s: %v", cmd.Path, err)
	}
	logf.Close()
	s.cmd = cmd
	t.Cleanup(s.Stop)
}

// waitReady polls until the server answers, then runs setup (creating the
// test database).
func waitReady(t testing.TB, s *Server, driver, dsn, setup string) {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer db.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			break
		}
		if s.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("dbtest: %s did not come up: %v\nlog:\n%s", s.URL, err, s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := db.Exec(setup); err != nil {
		t.Fatalf("dbtest: %s: %v", setup, err)
	}
}

func tempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	// Readable by the postgres user when the test runs as root.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

// pgCredential is the user PostgreSQL runs as: nil (ourselves) unless we
// are root, then the postgres system user, who must own dir.
func pgCredential(t testing.TB, dir string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("dbtest: running as root and there is no postgres user to run PostgreSQL as: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// freePort asks the kernel for a free port on 127.0.0.1. There is a race
// between closing the probe and the server binding it; a server that fails
// to bind fails the test with its log.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("dbtest: unexpected address %v", l.Addr())
	}
	return addr.Port
}
