package pgtest

import (
	"errors"
	"net"
	"os"
	"testing"
)

// A port bound by someone else between picking and starting is reported as
// errPortTaken, the one failure Start retries on fresh ports.
func TestLaunchReportsATakenPort(t *testing.T) {
	if os.Getenv("PLAYGROUND_BIN") == "" {
		t.Skip("PLAYGROUND_BIN is not set")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ports := FreePorts(t, 3)
	p := &Playground{t: t, DataDir: t.TempDir(), SQLPort: ports[0], StatusPort: ports[1],
		PDPort: taken.Addr().(*net.TCPAddr).Port, KVPort: ports[2]}
	err = p.launch(Binary(t))
	if err == nil {
		p.Kill()
		t.Fatal("the playground started on a port someone else holds")
	}
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("want errPortTaken, got %v", err)
	}
}
