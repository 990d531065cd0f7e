package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newCluster starts an in-process kfake cluster closed at cleanup.
func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// sink is a KafkaSink as the coordinator stores it: every default filled.
func sink(brokers []string, topic string) *tidestreamv1.KafkaSink {
	return &tidestreamv1.KafkaSink{
		Brokers:           brokers,
		Topic:             topic,
		ReplicationFactor: 1,
		MaxMessageBytes:   DefaultMaxMessageBytes,
		MaxRetry:          DefaultMaxRetry,
		Compression:       "none",
		AutoCreateTopic:   true,
		RequiredAcks:      -1,
		DialTimeout:       durationpb.New(10 * time.Second),
		ReadTimeout:       durationpb.New(10 * time.Second),
		WriteTimeout:      durationpb.New(10 * time.Second),
		Tls:               &tidestreamv1.TLSConfig{},
		Sasl:              &tidestreamv1.SASLConfig{},
	}
}

// newProducer builds a Producer from s, closed at cleanup.
func newProducer(t testing.TB, s *tidestreamv1.KafkaSink, tune ...func(*Config)) *Producer {
	t.Helper()
	cfg, err := FromSink(s)
	require.NoError(t, err)
	for _, f := range tune {
		f(&cfg)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// consume reads n records of topic from the start of every partition.
func consume(t testing.TB, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d records", len(out), n)
		fs.EachError(func(_ string, _ int32, err error) { require.NoError(t, err) })
		out = append(out, fs.Records()...)
	}
	// Anything beyond n would be a duplicate: one short extra poll.
	extra, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	out = append(out, cl.PollFetches(extra).Records()...)
	return out
}

// acks collects onAck results.
type acks struct {
	ch chan error
}

func newAcks(n int) *acks { return &acks{ch: make(chan error, n)} }

func (a *acks) fn() func(error) { return func(err error) { a.ch <- err } }

// wait returns the first n results.
func (a *acks) wait(t testing.TB, n int) []error {
	t.Helper()
	out := make([]error, 0, n)
	timeout := time.After(60 * time.Second)
	for len(out) < n {
		select {
		case err := <-a.ch:
			out = append(out, err)
		case <-timeout:
			t.Fatalf("got %d of %d acks", len(out), n)
		}
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
