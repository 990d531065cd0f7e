package harness

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// FiguresEnv names a file that Figure appends to: `make test` runs the e2e
// suite without -v, which prints a passing test's log to nobody, and then
// prints the file, so the figures the suite measures (lag during TPC-C,
// recovery after outages) show in CI's output all the same.
const FiguresEnv = "TIDESTREAM_FIGURES"

var figuresMu sync.Mutex // the tests of one package run in one process

// Figure logs a measured figure, and appends it, named by the test, to
// the file FiguresEnv names when it is set. A figure is printed, never
// asserted: a timed bound would flake on a busy machine.
func Figure(t testing.TB, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	path := os.Getenv(FiguresEnv)
	if path == "" {
		return
	}
	figuresMu.Lock()
	defer figuresMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("figures file %s: %v", path, err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s: %s\n", t.Name(), line); err != nil {
		t.Errorf("figures file %s: %v", path, err)
	}
}
