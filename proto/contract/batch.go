package contract

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Message sizes on stage-to-stage streams. A sender closes a batch before it
// passes MaxBatchBytes (an event larger than that goes alone); a receiver
// accepts MaxMessageBytes, which holds the largest single event TiDB can
// write (txn-entry-size-limit, at most 120 MiB) with its encoding overhead.
// So a sender that keeps to MaxBatchBytes is never refused.
const (
	MaxBatchBytes   = 8 << 20
	MaxMessageBytes = 256 << 20
)

// Fits reports whether an item of n bytes may join a batch already holding
// size bytes: always into an empty batch, otherwise only within
// MaxBatchBytes.
func Fits(size, n int) bool { return size == 0 || size+n <= MaxBatchBytes }

// ClientKeepalive is what a stage dialing another stage uses; the server's
// enforcement policy (services/runtime/server) accepts it. Pinging more often
// than the server's minimum gets the connection closed with every stream on
// it, so both ends take their values from here.
func ClientKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{
		// Detects a dead upstream (its node vanished) within ~40 s instead
		// of waiting for TCP keepalive, so the pipeline restarts promptly.
		Time:                30 * time.Second,
		Timeout:             10 * time.Second,
		PermitWithoutStream: true,
	}
}

// DialOptions are the options for a stage-to-stage connection, before
// transport credentials: keepalive and message sizes.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(ClientKeepalive()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
	}
}
