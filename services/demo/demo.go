// Package demo is `make demo`: the seed guide ("Integrate with Confluent
// Cloud using TiCDC") run end to end on one machine. It starts the
// playground (TiDB), devstack (Kafka with TLS and SASL PLAIN, a Schema
// Registry over HTTPS with basic auth, as Confluent Cloud) and `cdc
// server`, creates the changefeed with the guide's own command, loads
// TPC-C with go-tpc, shows what replicates while it does, then prints each
// topic's record count and one decoded record, the checkpoint lag, and the
// diff's verdict: the topics replayed as the JDBC sink applies them,
// compared with TiDB. Everything it started is stopped when it returns.
package demo

import (
	"cmp"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql" // TiDB's SQL port: the TSO and go-tpc's database
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/tidestream/tidestream/services/consumer"
	"github.com/tidestream/tidestream/services/devstack"
	"github.com/tidestream/tidestream/services/diff"
)

// Config configures a demo run.
type Config struct {
	// BinDir holds playground, devstack, cdc and go-tpc.
	BinDir string
	// WorkDir keeps every process's data and log; empty is a temporary
	// directory, removed at the end unless Keep.
	WorkDir string
	// Warehouses is go-tpc's --warehouses.
	Warehouses int
	// RunTime is how long `go-tpc tpcc run` runs after prepare; 0 skips it.
	RunTime time.Duration
	// Keep leaves everything running after the verdict until the context
	// ends (Ctrl-C), and keeps a temporary WorkDir.
	Keep bool
	// Progress is how often a progress line is printed.
	Progress time.Duration
	Out      io.Writer
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.BinDir == "":
		return errors.New("demo: BinDir is required")
	case c.Warehouses < 1:
		return fmt.Errorf("demo: --warehouses %d: must be at least 1", c.Warehouses)
	case c.RunTime < 0:
		return fmt.Errorf("demo: --run-time %s: must not be negative", c.RunTime)
	case c.Out == nil:
		return errors.New("demo: Out is required")
	}
	for _, b := range []string{"playground", "devstack", "cdc", "go-tpc"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("demo: %s not found in %s (make demo builds it): %w", b, c.BinDir, err)
		}
	}
	return nil
}

// The demo's credentials, as placeholders of the guide's command would be
// filled in; the SR secret has characters the guide says to URL-encode.
const (
	kafkaKey    = "demo-key"
	kafkaSecret = "demo-secret"
	srKey       = "sr-key"
	srSecret    = "sr/secret+="
	changefeed  = "confluent-changefeed"
	database    = "tpcc"
)

// changefeedConf is the guide's changefeed.conf.
const changefeedConf = `[sink]
dispatchers = [{matcher = ['*.*'], topic = "tidb_{schema}_{table}", partition = "index-value"}]
`

type demo struct {
	cfg   Config
	out   io.Writer
	work  string
	began time.Time

	mu    sync.Mutex
	procs []*proc

	ca                 devstack.LoopbackCA
	tlsCfg             *tls.Config
	sqlPort, pdPort    int
	cdcAddr, cdcStatus string
	kafka              []string
	registry           string
	db                 *sql.DB
	kc                 *kgo.Client
	adm                *kadm.Client
	decoder            *consumer.Decoder
	cdcBin, goTPC      string
}

// Run runs the demo and returns nil when the diff found every row; it
// stops what it started before it returns.
func Run(ctx context.Context, cfg Config) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Progress = cmp.Or(cfg.Progress, 5*time.Second)
	d := &demo{cfg: cfg, out: cfg.Out, began: time.Now(), cdcBin: filepath.Join(cfg.BinDir, "cdc"), goTPC: filepath.Join(cfg.BinDir, "go-tpc")}
	d.work = cfg.WorkDir
	if d.work == "" {
		if d.work, err = os.MkdirTemp("", "tidestream-demo-"); err != nil {
			return err
		}
		if !cfg.Keep {
			defer os.RemoveAll(d.work)
		}
	} else if err := os.MkdirAll(d.work, 0o755); err != nil {
		return err
	}
	defer func() {
		d.say("stopping everything the demo started")
		if d.kc != nil {
			d.kc.Close()
		}
		if d.db != nil {
			_ = d.db.Close()
		}
		d.stopAll()
		if err != nil {
			d.say("logs are in %s", d.work)
		}
	}()
	d.say("work directory %s (each process's log is <name>.log there)", d.work)
	if err := d.startAll(ctx); err != nil {
		return err
	}
	if err := d.createChangefeed(ctx); err != nil {
		return err
	}
	if err := d.load(ctx); err != nil {
		return err
	}
	ok, err := d.report(ctx)
	if err != nil {
		return err
	}
	if cfg.Keep {
		d.say("everything keeps running; TiDB mysql://root@127.0.0.1:%d, cdc http://%s; Ctrl-C stops it", d.sqlPort, d.cdcAddr)
		<-ctx.Done()
	}
	if !ok {
		return errors.New("demo: the topics do not match TiDB")
	}
	return nil
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%6s] %s\n", time.Since(d.began).Round(time.Second), fmt.Sprintf(format, args...))
}

// startAll starts devstack, the playground and cdc server on free
// loopback ports and waits until each serves.
func (d *demo) startAll(ctx context.Context) error {
	ports, err := freePorts(7)
	if err != nil {
		return err
	}
	if d.ca, err = devstack.WriteLoopbackCA(d.work, 30*24*time.Hour); err != nil {
		return err
	}
	d.tlsCfg = &tls.Config{RootCAs: d.ca.Pool, MinVersion: tls.VersionTLS12}

	d.say("starting devstack: 3 Kafka brokers with TLS and SASL PLAIN, a Schema Registry over HTTPS with basic auth")
	dev, err := d.start("devstack", nil, filepath.Join(d.cfg.BinDir, "devstack"), "--brokers", "3",
		"--sasl-user", kafkaKey+":"+kafkaSecret, "--tls-cert", d.ca.CertFile, "--tls-key", d.ca.KeyFile,
		"--registry-user", srKey+":"+srSecret, "--registry-tls", "--registry-port", strconv.Itoa(ports[0]))
	if err != nil {
		return err
	}
	line, err := dev.waitLine(ctx, "kafka ", time.Minute)
	if err != nil {
		return err
	}
	d.kafka = strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "kafka ")), ",")
	if line, err = dev.waitLine(ctx, "registry ", time.Minute); err != nil {
		return err
	}
	d.registry = strings.TrimSpace(strings.TrimPrefix(line, "registry "))

	d.say("starting the playground: TiDB, PD and TiKV in one process (the first build of TiDB took the minutes before this)")
	d.sqlPort, d.pdPort = ports[1], ports[3]
	pg, err := d.start("playground", nil, filepath.Join(d.cfg.BinDir, "playground"), "--data-dir", filepath.Join(d.work, "upstream"),
		"--sql-port", strconv.Itoa(d.sqlPort), "--status-port", strconv.Itoa(ports[2]), "--pd-port", strconv.Itoa(d.pdPort), "--kv-port", strconv.Itoa(ports[4]))
	if err != nil {
		return err
	}
	if _, err := pg.waitLine(ctx, "TiKV ", 3*time.Minute); err != nil {
		return err
	}
	if d.db, err = sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", d.sqlPort)); err != nil {
		return err
	}

	d.say("starting cdc server (embedded etcd, every role in one process)")
	d.cdcAddr, d.cdcStatus = fmt.Sprintf("127.0.0.1:%d", ports[5]), fmt.Sprintf("127.0.0.1:%d", ports[6])
	srv, err := d.start("cdc", []string{"SSL_CERT_FILE=" + d.ca.CAFile}, d.cdcBin, "server",
		"--pd", fmt.Sprintf("http://127.0.0.1:%d", d.pdPort), "--data-dir", filepath.Join(d.work, "cdc-data"),
		"--addr", d.cdcAddr, "--status-addr", d.cdcStatus)
	if err != nil {
		return err
	}
	if err := srv.waitHTTP(ctx, "http://"+d.cdcStatus+"/readyz", 2*time.Minute); err != nil {
		return err
	}
	d.kc, err = kgo.NewClient(append(d.kafkaOpts(), kgo.SeedBrokers(d.kafka...))...)
	if err != nil {
		return err
	}
	d.adm = kadm.NewClient(d.kc)
	reg, err := consumer.NewRegistryClient(d.registryURL(), d.registryOpts()...)
	if err != nil {
		return err
	}
	d.decoder = consumer.NewDecoder(reg)
	d.say("up: TiDB mysql://root@127.0.0.1:%d, PD 127.0.0.1:%d, Kafka %s, registry %s, cdc http://%s",
		d.sqlPort, d.pdPort, strings.Join(d.kafka, ","), d.registry, d.cdcAddr)
	return nil
}

// createChangefeed runs the guide's command, loopback addresses and the
// demo's credentials filled in.
func (d *demo) createChangefeed(ctx context.Context) error {
	conf := filepath.Join(d.work, "changefeed.conf")
	if err := os.WriteFile(conf, []byte(changefeedConf), 0o600); err != nil {
		return err
	}
	reg := d.registryURL()
	args := []string{"cli", "changefeed", "create", "--server=http://" + d.cdcAddr,
		"--sink-uri=kafka://" + d.kafka[0] + "/ticdc-meta?protocol=avro&replication-factor=3&enable-tls=true&auto-create-topic=true" +
			"&sasl-mechanism=plain&sasl-user=" + kafkaKey + "&sasl-password=" + kafkaSecret,
		"--schema-registry=" + reg, "--changefeed-id=" + changefeed, "--config", conf}
	d.say("creating the changefeed with the guide's command:\n  cdc %s\n  %s is the guide's:\n    %s", showArgs(args), conf,
		strings.ReplaceAll(strings.TrimSpace(changefeedConf), "\n", "\n    "))
	if err := d.run(ctx, "changefeed-create", d.cdcBin, args...); err != nil {
		return err
	}
	d.say("changefeed %s created", changefeed)
	return nil
}

// load runs go-tpc prepare, then run, printing progress meanwhile; the
// lag samples of the run are summarised.
func (d *demo) load(ctx context.Context) error {
	common := []string{"tpcc", "--warehouses", strconv.Itoa(d.cfg.Warehouses), "-H", "127.0.0.1", "-P", strconv.Itoa(d.sqlPort), "-D", database, "-T", "4"}
	if _, err := d.db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+database); err != nil {
		return err
	}
	d.say("go-tpc tpcc --warehouses %d prepare: creates the nine TPC-C tables and loads them", d.cfg.Warehouses)
	if _, err := d.phase(ctx, "prepare", append(slices.Clone(common[:1]), append(common[1:], "prepare")...)); err != nil {
		return err
	}
	if d.cfg.RunTime > 0 {
		d.say("go-tpc tpcc run for %s", d.cfg.RunTime)
		lags, err := d.phase(ctx, "run", append(slices.Clone(common), "run", "--time", d.cfg.RunTime.String()))
		if err != nil {
			return err
		}
		if len(lags) > 0 {
			slices.Sort(lags)
			d.say("checkpoint lag during the run: p50 %s, p99 %s, max %s over %d samples",
				pct(lags, 50), pct(lags, 99), lags[len(lags)-1], len(lags))
		}
	}
	return nil
}

// phase runs one go-tpc command to its end, printing a progress line every
// Progress and sampling the checkpoint lag every 500 ms.
func (d *demo) phase(ctx context.Context, name string, args []string) ([]time.Duration, error) {
	p, err := d.start("go-tpc-"+name, nil, d.goTPC, args...)
	if err != nil {
		return nil, err
	}
	var lags []time.Duration
	sample := time.NewTicker(500 * time.Millisecond)
	defer sample.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			p.stop(5 * time.Second)
			return nil, ctx.Err()
		case <-p.done:
			if p.err != nil {
				return nil, fmt.Errorf("go-tpc %s: %w; its output ends:\n%s", name, p.err, p.tail(20))
			}
			d.progress(ctx, "go-tpc "+name+" done")
			return lags, nil
		case <-sample.C:
			if lag, _, err := d.lag(ctx); err == nil {
				lags = append(lags, lag)
			}
			if time.Since(last) >= d.cfg.Progress {
				last = time.Now()
				d.progress(ctx, "go-tpc "+name+": "+p.lastLine())
			}
		}
	}
}

// progress prints what runs, the records in the TPC-C topics and the lag.
func (d *demo) progress(ctx context.Context, what string) {
	records, topics, _ := d.records(ctx)
	lag, state, err := d.lag(ctx)
	lagText := lag.Round(100 * time.Millisecond).String()
	if err != nil {
		lagText = "unknown (" + err.Error() + ")"
	}
	d.say("%s | %d records in %d topics | changefeed %s, checkpoint lag %s", what, records, len(topics), state, lagText)
}

// records counts the records of the tidb_tpcc_* topics.
func (d *demo) records(ctx context.Context) (int64, map[string]int64, error) {
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	listed, err := d.adm.ListTopics(tctx)
	if err != nil {
		return 0, nil, err
	}
	var names []string
	for _, t := range listed.Names() {
		if strings.HasPrefix(t, "tidb_"+database+"_") {
			names = append(names, t)
		}
	}
	out := map[string]int64{}
	if len(names) == 0 {
		return 0, out, nil
	}
	ends, err := d.adm.ListEndOffsets(tctx, names...)
	if err != nil {
		return 0, nil, err
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		out[o.Topic] += o.Offset
		total += o.Offset
	})
	return total, out, nil
}

// tso is a fresh TSO from TiDB: the start ts of a transaction begun now.
func (d *demo) tso(ctx context.Context) (uint64, error) {
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return 0, err
	}
	var ts uint64
	err = conn.QueryRowContext(ctx, "SELECT @@tidb_current_ts").Scan(&ts)
	if _, cerr := conn.ExecContext(ctx, "COMMIT"); err == nil {
		err = cerr
	}
	if err == nil && ts == 0 {
		err = errors.New("TiDB returned no TSO")
	}
	return ts, err
}

// checkpoint is the changefeed's state and checkpoint, through the CLI a
// user would use.
func (d *demo) checkpoint(ctx context.Context) (uint64, string, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := execOutput(qctx, d.cdcBin, "cli", "changefeed", "query", "-s", "-c", changefeed, "--server=http://"+d.cdcAddr)
	if err != nil {
		return 0, "", err
	}
	var q struct {
		State      string `json:"state"`
		Checkpoint uint64 `json:"checkpoint_tso"`
		Error      *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(out, &q); err != nil {
		return 0, "", fmt.Errorf("changefeed query: %w: %s", err, out)
	}
	state := q.State
	if q.Error != nil && q.Error.Message != "" {
		state += " (" + q.Error.Message + ")"
	}
	return q.Checkpoint, state, nil
}

// lag is how far the checkpoint is behind TiDB's TSO.
func (d *demo) lag(ctx context.Context) (time.Duration, string, error) {
	cp, state, err := d.checkpoint(ctx)
	if err != nil {
		return 0, "", err
	}
	now, err := d.tso(ctx)
	if err != nil {
		return 0, state, err
	}
	return tsoLag(now, cp), state, nil
}

// tsoLag is the difference of two TSOs' physical parts (ms, above 18
// logical bits).
func tsoLag(now, ts uint64) time.Duration {
	if ts >= now {
		return 0
	}
	return time.Duration((now>>18)-(ts>>18)) * time.Millisecond
}

// report waits for the checkpoint to pass the end of the load, prints the
// topics, and runs the diff at that point.
func (d *demo) report(ctx context.Context) (bool, error) {
	end, err := d.tso(ctx)
	if err != nil {
		return false, err
	}
	d.say("waiting for the changefeed checkpoint to pass the end of the load")
	deadline := time.Now().Add(5 * time.Minute)
	for {
		cp, state, err := d.checkpoint(ctx)
		if err == nil && cp >= end {
			break
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("demo: the checkpoint did not pass %d within 5 minutes (changefeed %s, err %v)", end, state, err)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return false, err
		}
	}
	lag, state, _ := d.lag(ctx)
	_, topics, err := d.records(ctx)
	if err != nil {
		return false, err
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	sort.Strings(names)
	d.say("the topics (one per table; history has no primary key and no NOT NULL unique key, so it has no Kafka key and is not replicated, as with TiCDC):")
	for _, t := range names {
		sample, err := d.firstRecord(ctx, t)
		if err != nil {
			sample = "(" + err.Error() + ")"
		}
		fmt.Fprintf(d.out, "  %-24s %9d records  e.g. %s\n", t, topics[t], sample)
	}
	d.say("changefeed %s is %s, checkpoint lag %s", changefeed, state, lag.Round(100*time.Millisecond))
	d.say("diff: replaying the topics as the JDBC sink applies them (upsert by key, delete on tombstone) and comparing with TiDB at ts %d", end)
	rep, err := diff.Run(ctx, diff.Config{
		Upstream: fmt.Sprintf("mysql://root@127.0.0.1:%d/", d.sqlPort), SnapshotTS: end, Schemas: []string{database},
		Brokers: d.kafka, KafkaOpts: d.kafkaOpts(), Registry: d.registryURL(), RegistryOpts: d.registryOpts(),
	})
	if err != nil {
		return false, err
	}
	rep.Write(d.out)
	return rep.OK(), nil
}

// registryURL is the registry's URL with the demo's key and secret, as
// the guide's --schema-registry has them.
func (d *demo) registryURL() string {
	return strings.Replace(d.registry, "https://", "https://"+srKey+":"+url.QueryEscape(srSecret)+"@", 1)
}

func (d *demo) kafkaOpts() []kgo.Opt {
	return []kgo.Opt{kgo.DialTLSConfig(d.tlsCfg), kgo.SASL(plain.Auth{User: kafkaKey, Pass: kafkaSecret}.AsMechanism())}
}

func (d *demo) registryOpts() []sr.ClientOpt {
	return []sr.ClientOpt{sr.HTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: d.tlsCfg}})}
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(10 * time.Millisecond)
}

// showArgs renders a command line as the guide writes it: the command
// words on the first line, then one flag per line, values quoted.
func showArgs(args []string) string {
	var b strings.Builder
	for i, a := range args {
		switch {
		case !strings.HasPrefix(a, "--"):
			if i > 0 && strings.HasPrefix(args[i-1], "--") && !strings.Contains(args[i-1], "=") {
				b.WriteString(" " + a) // the value of the flag before
				continue
			}
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(a)
		default:
			if k, v, ok := strings.Cut(a, "="); ok {
				a = k + `="` + v + `"`
			}
			b.WriteString(" \\\n    " + a)
		}
	}
	return b.String()
}
