package service

import (
	"testing"

	"go.uber.org/goleak"
)

// The service starts a batcher and a puller goroutine per stream; every one
// must end with its stream.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
