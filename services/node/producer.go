package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/tidestream/tidestream/coordinator/store"
	"github.com/tidestream/tidestream/producer/kafka"
	"github.com/tidestream/tidestream/producer/pipeline"
	"github.com/tidestream/tidestream/producer/runner"
	"github.com/tidestream/tidestream/proto/contract"
	tidestreamv1 "github.com/tidestream/tidestream/proto/tidestream/v1"
	"github.com/tidestream/tidestream/services/runtime/logging"
)

// ProducerConfig configures the producer role.
type ProducerConfig struct {
	// ProgressInterval paces the role's fenced progress writes: one etcd
	// transaction per 64 pipelines per interval.
	ProgressInterval time.Duration
}

// AddFlags registers the producer role's flags.
func (c *ProducerConfig) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&c.ProgressInterval, "producer-progress-interval", c.ProgressInterval, "how often the producer writes its pipelines' checkpoints to etcd")
}

// Validate checks the producer role's flags.
func (c ProducerConfig) Validate() error {
	if c.ProgressInterval < 50*time.Millisecond || c.ProgressInterval > time.Minute {
		return fmt.Errorf("--producer-progress-interval %s: must be within [50ms, 1m]", c.ProgressInterval)
	}
	return nil
}

// producerRole runs the pipelines assigned to this member: it pulls each
// from the encoder its assignment names and produces to the changefeed's
// Kafka, writing progress fenced on the assignments.
type producerRole struct {
	r     *runner.Runner
	conns *encoderConns
}

func newProducerRole(n *Node) (Role, error) {
	log := logging.Component(n.log, "producer")
	var self string
	if n.hasRole(RoleEncoder) {
		self = n.advert
	}
	conns := &encoderConns{self: self}
	if er := n.role(RoleEncoder); er != nil && n.local != nil {
		conns.local = n.local.Encoder(er.(*encoderRole).svc)
	}
	r, err := runner.New(producerRunnerConfig(store.New(n.etcd, n.keys), n.cfg.MemberID, n.advert, n.cfg.Producer.ProgressInterval, conns.get, log))
	if err != nil {
		return nil, err
	}
	return &producerRole{r: r, conns: conns}, nil
}

// producerRunnerConfig is the runner configuration of the producer role:
// assignments watched and progress written, fenced, through st; Kafka
// sinks built from each changefeed's sink; encoders dialled by encoder;
// progress written every interval.
//
// Tests build it too, to run the real watch and fence against a real etcd
// with their own Sink and Encoder.
func producerRunnerConfig(st *store.Store, member, advert string, interval time.Duration, encoder func(addr string) (tidestreamv1.EncoderServiceClient, error), log *slog.Logger) runner.Config {
	return runner.Config{
		Member: member,
		Addr:   advert,
		Watch: func(ctx context.Context, reset func(), fn func([]runner.Update)) error {
			as, rev, err := st.Assignments(ctx, member)
			if err != nil {
				return err
			}
			reset()
			us := make([]runner.Update, 0, len(as))
			for _, a := range as {
				us = append(us, runner.Update{Key: a.Key, Assignment: fromStore(a)})
			}
			fn(us)
			return st.WatchAssignments(ctx, member, rev, func(evs []store.AssignmentEvent) error {
				us := make([]runner.Update, 0, len(evs))
				for _, e := range evs {
					u := runner.Update{Key: e.Key}
					if e.Assignment != nil {
						u.Assignment = fromStore(e.Assignment)
					}
					us = append(us, u)
				}
				fn(us)
				return nil
			})
		},
		WriteProgress: func(ctx context.Context, ps []runner.Progress) ([]runner.Progress, error) {
			writes := make([]store.ProgressWrite, len(ps))
			back := make(map[*store.Assignment]runner.Progress, len(ps))
			for i, p := range ps {
				a := p.Assignment.Fence.(*store.Assignment)
				writes[i] = store.ProgressWrite{Assignment: a, Status: p.Status}
				back[a] = p
			}
			fenced, err := st.WriteProgress(ctx, writes)
			out := make([]runner.Progress, 0, len(fenced))
			for _, f := range fenced {
				out = append(out, back[f.Assignment])
			}
			return out, err
		},
		Sink: func(ctx context.Context, ns, cf string) (pipeline.Sink, func(), error) {
			c, err := st.Get(ctx, ns, cf)
			if err != nil {
				return nil, nil, err
			}
			kc, err := kafka.FromSink(c.Info.GetKafka())
			if err != nil {
				return nil, nil, err
			}
			if c.Info.GetKafka().GetClientId() == "" {
				kc.ClientID = kafka.TiCDCClientID(advert, ns, cf)
			}
			kc.Logger = log.With("changefeed", cf)
			p, err := kafka.New(kc)
			if err != nil {
				return nil, nil, err
			}
			// TiCDC's start check: credentials, ACLs and the sink URI's
			// topic fail here, with the broker's message, not on the first
			// record.
			if err := p.CheckDefaultTopic(ctx); err != nil {
				p.Close()
				return nil, nil, err
			}
			return p, p.Close, nil
		},
		Encoder:  encoder,
		Interval: interval,
		Logger:   log,
	}
}

func fromStore(a *store.Assignment) *runner.Assignment {
	return &runner.Assignment{Key: a.Key, Record: a.Record, Fence: a}
}

func (r *producerRole) Name() string          { return RoleProducer }
func (r *producerRole) Register(*grpc.Server) {}

// Run is ready at once and runs the member's pipelines until ctx ends.
func (r *producerRole) Run(ctx context.Context, env Env) error {
	env.Ready()
	return r.r.Run(ctx)
}
func (r *producerRole) Stop()        {}
func (r *producerRole) Close() error { return r.conns.Close() }

// encoderConns are the producer's connections to encoders, one per
// address; an assignment whose route names no encoder uses this process's
// own when it runs the encoder role (`cdc server`).
type encoderConns struct {
	self  string
	conns contract.Conns
	// local calls this process's encoder in process (Config.LocalStreams).
	local tidestreamv1.EncoderServiceClient
}

func (e *encoderConns) get(addr string) (tidestreamv1.EncoderServiceClient, error) {
	if addr == "" {
		addr = e.self
	}
	if e.local != nil && addr == e.self {
		return e.local, nil
	}
	if addr == "" {
		return nil, errors.New("the assignment's route names no encoder and this process runs none")
	}
	cc, err := e.conns.Get(addr)
	if err != nil {
		return nil, err
	}
	return tidestreamv1.NewEncoderServiceClient(cc), nil
}

func (e *encoderConns) Close() error { return e.conns.Close() }
