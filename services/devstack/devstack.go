package devstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/tidestream/tidestream/services/devstack/registry"
	"github.com/tidestream/tidestream/services/runtime/logging"
)

// loopback is the only address devstack listens on: it has no ACLs and, by
// default, no authentication, so it must not be reachable from elsewhere.
const loopback = "127.0.0.1"

// registryDrain bounds the registry's graceful shutdown; its requests are
// in-memory and finish in microseconds, so anything still open after this
// is an idle client.
const registryDrain = 5 * time.Second

// Addrs are the bound addresses, known once Listen returns.
type Addrs struct {
	// Kafka is each broker's host:port, broker 0 first.
	Kafka []string
	// Registry is the registry's base URL, http://host:port.
	Registry string
}

// Stack is a kfake cluster and a registry server with one lifecycle.
type Stack struct {
	cfg    Config
	logger *slog.Logger
	tls    *tls.Config

	mu       sync.Mutex
	cluster  *kfake.Cluster
	regLis   net.Listener
	regSrv   *http.Server
	addrs    Addrs
	listened bool
	ran      bool
}

// New validates cfg and loads the TLS key pair, so a bad flag fails before
// anything listens. A nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Stack, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, logger: logging.Component(logger, "devstack")}
	if cfg.TLSCertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("devstack: TLS key pair %s / %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	return s, nil
}

// Listen starts the brokers (kfake serves as soon as it listens) and binds
// the registry's port, and returns the addresses. It is optional; Run
// listens if it has not been called. Once Listen succeeds Run must be
// called: Run is what stops the brokers.
func (s *Stack) Listen() (Addrs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listened {
		return Addrs{}, errors.New("devstack: Listen called twice")
	}
	if s.ran {
		return Addrs{}, errors.New("devstack: Listen after Run")
	}
	return s.listenLocked()
}

func (s *Stack) listenLocked() (Addrs, error) {
	reg, err := registry.New(registry.Config{Users: credentialMap(s.cfg.RegistryUsers)})
	if err != nil {
		return Addrs{}, fmt.Errorf("devstack: %w", err)
	}
	cluster, err := kfake.NewCluster(s.kfakeOpts()...)
	if err != nil {
		return Addrs{}, fmt.Errorf("devstack: starting kfake: %w", err)
	}
	if len(s.cfg.SASLUsers) > 0 {
		if err := s.speakSASLLikeKafka(cluster); err != nil {
			cluster.Close()
			return Addrs{}, fmt.Errorf("devstack: %w", err)
		}
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(loopback, strconv.Itoa(s.cfg.RegistryPort)))
	if err != nil {
		cluster.Close()
		return Addrs{}, fmt.Errorf("devstack: registry listen: %w", err)
	}
	scheme := "http"
	if s.cfg.RegistryTLS {
		lis, scheme = tls.NewListener(lis, s.tls), "https"
	}
	s.cluster, s.regLis, s.listened = cluster, lis, true
	s.regSrv = &http.Server{
		Handler:           reg,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	s.addrs = Addrs{Kafka: cluster.ListenAddrs(), Registry: scheme + "://" + lis.Addr().String()}
	s.logger.Info("devstack listening", "kafka", s.addrs.Kafka, "registry", s.addrs.Registry,
		"sasl", len(s.cfg.SASLUsers) > 0, "tls", s.tls != nil, "data_dir", s.cfg.DataDir)
	return s.addrs, nil
}

func (s *Stack) kfakeOpts() []kfake.Opt {
	opts := []kfake.Opt{
		kfake.NumBrokers(s.cfg.Brokers),
		kfake.DefaultNumPartitions(s.cfg.DefaultPartitions),
		// Producers create topics by naming them, as with Kafka's
		// auto.create.topics.enable default; kfake refuses unless told.
		kfake.AllowAutoTopicCreation(),
		kfake.ClusterID("devstack"),
		kfake.WithLogger(kfakeLogger{s.logger}),
	}
	if s.cfg.KafkaPort != 0 {
		ports := make([]int, s.cfg.Brokers)
		for i := range ports {
			ports[i] = s.cfg.KafkaPort + i
		}
		opts = append(opts, kfake.Ports(ports...))
	}
	if len(s.cfg.SASLUsers) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for _, u := range s.cfg.SASLUsers {
			// Every mechanism for every user: clients pick theirs
			// (Confluent Cloud speaks PLAIN, self-managed clusters
			// often SCRAM) and devstack should accept either.
			for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
				opts = append(opts, kfake.Superuser(mech, u.User, u.Password))
			}
		}
	}
	if s.tls != nil {
		opts = append(opts, kfake.TLS(s.tls))
	}
	if s.cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(s.cfg.DataDir))
	}
	return opts
}

// Run serves until ctx ends, then stops the registry and the brokers and
// returns nil; it returns an error if listening or serving fails. Run may
// be called once.
func (s *Stack) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return errors.New("devstack: Run called twice")
	}
	s.ran = true
	if !s.listened {
		if _, err := s.listenLocked(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	cluster, lis, srv := s.cluster, s.regLis, s.regSrv
	s.mu.Unlock()

	// The brokers stop last, after the registry has drained: a client
	// mid-registration gets its answer before the topic it is about to
	// produce to goes away. With DataDir, Close is also what writes
	// kfake's state to disk, so it must run on every return path.
	defer func() {
		cluster.Close()
		s.logger.Info("devstack stopped")
	}()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("devstack: registry on %s: %w", lis.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// A fresh context: ctx is already done and would skip the drain.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registryDrain)
		defer cancel()
		if err := srv.Shutdown(dctx); err != nil {
			_ = srv.Close()
		}
		return nil
	})
	err := g.Wait()
	// Serve closes the listener, except when Shutdown won the race and
	// Serve never started.
	_ = lis.Close()
	return err
}

func credentialMap(cs []Credential) map[string]string {
	if len(cs) == 0 {
		return nil
	}
	m := make(map[string]string, len(cs))
	for _, c := range cs {
		m[c.User] = c.Password
	}
	return m
}

// kfakeLogger sends kfake's logs to slog. kfake logs every request at its
// info level, so that becomes debug here; its warnings (failed requests)
// and errors keep their level.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var lv slog.Level
	switch level {
	case kfake.LogLevelError:
		lv = slog.LevelError
	case kfake.LogLevelWarn:
		lv = slog.LevelWarn
	case kfake.LogLevelInfo:
		lv = slog.LevelDebug
	default:
		lv = slog.LevelDebug - 4
	}
	// Checked first: formatting every request's log line would cost more
	// than serving it.
	if !k.l.Enabled(context.Background(), lv) {
		return
	}
	k.l.Log(context.Background(), lv, fmt.Sprintf(format, args...), "from", "kfake")
}
