package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// execOutput runs a command and returns its stdout, or an error with its
// stderr.
func execOutput(ctx context.Context, bin string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s: %w: %s", bin, err, ee.Stderr)
		}
		return nil, err
	}
	return out, nil
}

// firstRecord reads a topic's first record and renders its key and value
// decoded with the registry, shortened.
func (d *demo) firstRecord(ctx context.Context, topic string) (string, error) {
	cl, err := kgo.NewClient(append(d.kafkaOpts(), kgo.SeedBrokers(d.kafka...),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		fs := cl.PollRecords(pctx, 1)
		if err := pctx.Err(); err != nil {
			return "", fmt.Errorf("no record read: %w", err)
		}
		var rec *kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			if rec == nil {
				rec = r
			}
		})
		if rec == nil {
			continue
		}
		c, err := d.decoder.Decode(pctx, rec)
		if err != nil {
			return "", err
		}
		kj, _ := json.Marshal(c.Key)
		vj, _ := json.Marshal(c.Value)
		s := fmt.Sprintf("key %s value %s", kj, vj)
		if len(s) > 160 {
			s = s[:157] + "..."
		}
		return s, nil
	}
}
