package harness

import (
	"os"
	"path/filepath"
	"testing"
)

// Figures land in the file FiguresEnv names, one line each, named by the
// test, after what was there.
func TestFigureAppendsToTheFiguresFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "figures")
	t.Setenv(FiguresEnv, path)
	Figure(t, "lag p50 %s", "1.5s")
	Figure(t, "lag p99 %s", "2s")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "TestFigureAppendsToTheFiguresFile: lag p50 1.5s\nTestFigureAppendsToTheFiguresFile: lag p99 2s\n"
	if string(b) != want {
		t.Fatalf("figures file:\n%s\nwant:\n%s", b, want)
	}
}
