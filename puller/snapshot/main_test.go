package snapshot_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Close must release every goroutine client-go and the pd client start.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
