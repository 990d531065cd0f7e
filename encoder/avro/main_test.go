package avro

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// TiDB packages start no goroutines on import here, but a leak from a
	// future change to this package would otherwise go unnoticed.
	goleak.VerifyTestMain(m)
}
