package flagenv_test

import (
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/services/runtime/flagenv"
)

type opts struct {
	dataDir  string
	logLevel string
	drain    time.Duration
	pprof    bool
	brokers  []string
}

func newFlags(o *opts) *pflag.FlagSet {
	fs := pflag.NewFlagSet("cdc", pflag.ContinueOnError)
	fs.StringVar(&o.dataDir, "data-dir", "/var/lib/tidestream", "data directory")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level")
	fs.DurationVar(&o.drain, "grpc-drain-timeout", 15*time.Second, "drain")
	fs.BoolVar(&o.pprof, "pprof", true, "pprof")
	fs.StringSliceVar(&o.brokers, "brokers", nil, "brokers")
	fs.Bool("help", false, "help")
	return fs
}

func envCfg(env map[string]string) flagenv.Config {
	cfg := flagenv.DefaultConfig()
	cfg.Lookup = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	return cfg
}

func TestEnvName(t *testing.T) {
	require.Equal(t, "TIDESTREAM_DATA_DIR", flagenv.EnvName("TIDESTREAM", "data-dir"))
	require.Equal(t, "X_SINK_KAFKA_CLIENT_ID", flagenv.EnvName("X", "sink.kafka-client-id"))
}

func TestPrecedence(t *testing.T) {
	var o opts
	fs := newFlags(&o)
	require.NoError(t, fs.Parse([]string{"--data-dir=/from/flag"}))

	err := flagenv.Apply(fs, envCfg(map[string]string{
		"TIDESTREAM_DATA_DIR":           "/from/env", // loses: flag given
		"TIDESTREAM_LOG_LEVEL":          "debug",     // wins over default
		"TIDESTREAM_GRPC_DRAIN_TIMEOUT": "3s",
		"TIDESTREAM_PPROF":              "false",
		"TIDESTREAM_BROKERS":            "a:9092,b:9092",
		"TIDESTREAM_HELP":               "true", // excluded
		"OTHER_LOG_LEVEL":               "error",
	}))
	require.NoError(t, err)
	require.Equal(t, opts{
		dataDir:  "/from/flag",
		logLevel: "debug",
		drain:    3 * time.Second,
		pprof:    false,
		brokers:  []string{"a:9092", "b:9092"},
	}, o)
	help, err := fs.GetBool("help")
	require.NoError(t, err)
	require.False(t, help)
}

func TestDefaultsKeptWithoutEnv(t *testing.T) {
	var o opts
	fs := newFlags(&o)
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, flagenv.Apply(fs, envCfg(nil)))
	require.Equal(t, "/var/lib/tidestream", o.dataDir)
	require.True(t, o.pprof)
}

func TestEmptyValueIsApplied(t *testing.T) {
	var o opts
	fs := newFlags(&o)
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, flagenv.Apply(fs, envCfg(map[string]string{"TIDESTREAM_DATA_DIR": ""})))
	require.Empty(t, o.dataDir)
}

func TestInvalidValuesNameVarAndFlag(t *testing.T) {
	var o opts
	fs := newFlags(&o)
	require.NoError(t, fs.Parse(nil))
	err := flagenv.Apply(fs, envCfg(map[string]string{
		"TIDESTREAM_PPROF":              "maybe",
		"TIDESTREAM_GRPC_DRAIN_TIMEOUT": "soon",
	}))
	require.Error(t, err)
	require.ErrorContains(t, err, "invalid TIDESTREAM_PPROF for flag --pprof (bool)")
	require.ErrorContains(t, err, "invalid TIDESTREAM_GRPC_DRAIN_TIMEOUT for flag --grpc-drain-timeout (duration)")
}

func TestInvalidEnvIgnoredWhenFlagGiven(t *testing.T) {
	var o opts
	fs := newFlags(&o)
	require.NoError(t, fs.Parse([]string{"--pprof=false"}))
	require.NoError(t, flagenv.Apply(fs, envCfg(map[string]string{"TIDESTREAM_PPROF": "maybe"})))
	require.False(t, o.pprof)
}

func TestCobraPersistentFlags(t *testing.T) {
	var dataDir, level string
	root := &cobra.Command{Use: "cdc"}
	root.PersistentFlags().StringVar(&level, "log-level", "info", "")
	cfg := envCfg(map[string]string{"TIDESTREAM_LOG_LEVEL": "warn", "TIDESTREAM_DATA_DIR": "/env"})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return flagenv.Apply(cmd.Flags(), cfg)
	}
	sub := &cobra.Command{Use: "server", RunE: func(*cobra.Command, []string) error { return nil }}
	sub.Flags().StringVar(&dataDir, "data-dir", "", "")
	root.AddCommand(sub)
	root.SetArgs([]string{"server"})
	require.NoError(t, root.Execute())
	require.Equal(t, "warn", level)
	require.Equal(t, "/env", dataDir)
}

func TestAnnotateUsage(t *testing.T) {
	var o opts
	fs := newFlags(&o)
	cfg := flagenv.DefaultConfig()
	require.NoError(t, flagenv.AnnotateUsage(fs, cfg))
	require.NoError(t, flagenv.AnnotateUsage(fs, cfg)) // idempotent
	require.Equal(t, "data directory (env TIDESTREAM_DATA_DIR)", fs.Lookup("data-dir").Usage)
	require.Equal(t, "help", fs.Lookup("help").Usage)
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, flagenv.DefaultConfig().Validate())
	for _, p := range []string{"", "tidestream", "1X", "_X", "A-B"} {
		cfg := flagenv.DefaultConfig()
		cfg.Prefix = p
		require.ErrorContains(t, cfg.Validate(), "Config.Prefix", p)
		require.ErrorContains(t, flagenv.Apply(pflag.NewFlagSet("x", pflag.ContinueOnError), cfg), "Config.Prefix")
	}
}
