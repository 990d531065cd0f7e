package flagenv

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// Config configures Apply and AnnotateUsage.
type Config struct {
	// Prefix is prepended, with an underscore, to every variable name.
	// It must match [A-Z][A-Z0-9_]* so the names are portable across
	// shells. Default "TIDESTREAM".
	Prefix string
	// Lookup reads a variable. Nil means os.LookupEnv; tests pass a map.
	Lookup func(name string) (string, bool)
	// Exclude lists flag names never read from the environment. Default
	// help and version: an inherited TIDESTREAM_HELP=1 must not turn every
	// start of the server into a help screen.
	Exclude []string
}

// DefaultConfig returns the Config main starts from.
func DefaultConfig() Config {
	return Config{Prefix: "TIDESTREAM", Exclude: []string{"help", "version"}}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Prefix == "" {
		return errors.New("flagenv: Config.Prefix must not be empty (allowed: [A-Z][A-Z0-9_]*)")
	}
	for i, r := range c.Prefix {
		if !(r >= 'A' && r <= 'Z' || r == '_' && i > 0 || r >= '0' && r <= '9' && i > 0) {
			return fmt.Errorf("flagenv: Config.Prefix %q must match [A-Z][A-Z0-9_]*", c.Prefix)
		}
	}
	return nil
}

// EnvName returns the variable that sets flag: prefix, an underscore, then
// the flag name upper-cased with '-' and '.' turned into '_'
// ("data-dir" → "TIDESTREAM_DATA_DIR").
func EnvName(prefix, flag string) string {
	name := strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(flag))
	return prefix + "_" + name
}

// Apply sets every flag in fs that was not given on the command line from
// its environment variable, if that is set. Call it after fs.Parse (with
// cobra: in PersistentPreRunE on cmd.Flags()) and before reading any flag
// value; it relies on pflag's Changed to know what the command line set.
//
// A variable that is set but empty is applied too: FOO= is how an operator
// clears a default (say, --log-file), and treating it as unset would make
// that impossible.
//
// Every variable whose value the flag rejects is reported, joined into one
// error, so a misconfigured deployment is fixed in one round trip.
func Apply(fs *pflag.FlagSet, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	lookup := cfg.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || slices.Contains(cfg.Exclude, f.Name) {
			return
		}
		env := EnvName(cfg.Prefix, f.Name)
		val, ok := lookup(env)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, val); err != nil {
			// pflag's error quotes the value. Flags that can fail to parse
			// are typed (bool, int, duration), never credentials; a custom
			// Value that validates a URI must keep secrets out of its own
			// error text.
			errs = append(errs, fmt.Errorf("flagenv: invalid %s for flag --%s (%s): %w",
				env, f.Name, f.Value.Type(), err))
		}
	})
	return errors.Join(errs...)
}

// AnnotateUsage appends "(env NAME)" to the help text of every flag Apply
// would read, so --help documents the variables. Call it after the flags
// are defined and before help is printed.
func AnnotateUsage(fs *pflag.FlagSet, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if slices.Contains(cfg.Exclude, f.Name) {
			return
		}
		suffix := " (env " + EnvName(cfg.Prefix, f.Name) + ")"
		if !strings.HasSuffix(f.Usage, suffix) {
			f.Usage += suffix
		}
	})
	return nil
}
