package devstack

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// Credential is one user name and password.
type Credential struct {
	User     string
	Password string
}

// ParseCredential parses "user:password"; the password is everything after
// the first colon, so it may itself contain colons.
func ParseCredential(s string) (Credential, error) {
	user, pass, ok := strings.Cut(s, ":")
	if !ok || user == "" {
		return Credential{}, fmt.Errorf("credential %q is not user:password", redact(s))
	}
	return Credential{User: user, Password: pass}, nil
}

// redact keeps a credential's user for error messages and drops the
// password, so a typo on the command line does not end up in a log.
func redact(s string) string {
	if user, _, ok := strings.Cut(s, ":"); ok {
		return user + ":***"
	}
	return s
}

// Config configures a Stack.
type Config struct {
	// KafkaPort is the first broker's port; broker i listens on
	// KafkaPort+i. 0 picks a free port for each broker. Default 0.
	KafkaPort int
	// Brokers is the number of brokers, [1, 16]. Default 1.
	Brokers int
	// DefaultPartitions is the partition count of topics created by a
	// producer's metadata request or by CreateTopics with -1 partitions,
	// [1, 1000]. Default 3, overriding kfake's 10: a small count keeps
	// the per-partition ordering tests readable.
	DefaultPartitions int
	// SASLUsers enables SASL on every broker when not empty; each user
	// may log in with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. They are
	// superusers (ACLs are not enabled).
	SASLUsers []Credential
	// TLSCertFile and TLSKeyFile, both or neither, serve TLS on every
	// broker with this PEM certificate chain and key.
	TLSCertFile string
	TLSKeyFile  string
	// DataDir enables kfake's persistence: topics, records, consumer
	// group offsets, producer ids and SASL users are written there and
	// reloaded on the next start. Empty keeps everything in memory.
	// Reloaded SASL users win over SASLUsers in kfake, while devstack's
	// answer to a bad PLAIN login judges by SASLUsers (rejectBadPlain):
	// keep them the same across restarts.
	DataDir string
	// RegistryPort is the Schema Registry's port; 0 picks a free one.
	RegistryPort int
	// RegistryUsers enables HTTP basic auth on the registry when not
	// empty.
	RegistryUsers []Credential
	// RegistryTLS serves the registry over HTTPS with the brokers'
	// certificate (TLSCertFile), as Confluent Cloud's registry is.
	RegistryTLS bool
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{Brokers: 1, DefaultPartitions: 3}
}

// AddFlags registers the devstack flags on fs, bound to c.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&c.KafkaPort, "kafka-port", c.KafkaPort, "first broker port on 127.0.0.1 (broker i uses kafka-port+i); 0 picks free ports")
	fs.IntVar(&c.Brokers, "brokers", c.Brokers, "number of Kafka brokers")
	fs.IntVar(&c.DefaultPartitions, "default-partitions", c.DefaultPartitions, "partitions of auto-created topics (and of CreateTopics with -1)")
	fs.Var(&credentialsValue{&c.SASLUsers}, "sasl-user", "user:password accepted over SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (repeatable); any user turns SASL on")
	fs.StringVar(&c.TLSCertFile, "tls-cert", c.TLSCertFile, "PEM certificate (chain) the brokers serve TLS with; needs --tls-key")
	fs.StringVar(&c.TLSKeyFile, "tls-key", c.TLSKeyFile, "PEM private key for --tls-cert")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "kfake persistence directory: topics, records, group offsets and SASL users survive a restart "+
		"(SASL users saved there win over --sasl-user on later starts); empty keeps Kafka in memory. The registry is always in memory")
	fs.IntVar(&c.RegistryPort, "registry-port", c.RegistryPort, "Schema Registry port on 127.0.0.1; 0 picks a free port")
	fs.Var(&credentialsValue{&c.RegistryUsers}, "registry-user", "user:password for Schema Registry basic auth (repeatable); any user turns auth on")
	fs.BoolVar(&c.RegistryTLS, "registry-tls", c.RegistryTLS, "serve the Schema Registry over HTTPS with --tls-cert and --tls-key")
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Brokers < 1 || c.Brokers > 16 {
		return fmt.Errorf("devstack: Config.Brokers %d out of range [1, 16]", c.Brokers)
	}
	if c.KafkaPort < 0 || c.KafkaPort+c.Brokers-1 > 65535 {
		return fmt.Errorf("devstack: Config.KafkaPort %d: brokers %d..%d must be ports in [1, 65535] (or 0 to pick)",
			c.KafkaPort, c.KafkaPort, c.KafkaPort+c.Brokers-1)
	}
	if c.DefaultPartitions < 1 || c.DefaultPartitions > 1000 {
		return fmt.Errorf("devstack: Config.DefaultPartitions %d out of range [1, 1000]", c.DefaultPartitions)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("devstack: Config.TLSCertFile and TLSKeyFile must be set together")
	}
	if c.RegistryTLS && c.TLSCertFile == "" {
		return errors.New("devstack: Config.RegistryTLS needs TLSCertFile and TLSKeyFile (--registry-tls needs --tls-cert and --tls-key)")
	}
	if c.RegistryPort < 0 || c.RegistryPort > 65535 {
		return fmt.Errorf("devstack: Config.RegistryPort %d out of range [0, 65535]", c.RegistryPort)
	}
	if err := checkUsers("SASLUsers", c.SASLUsers); err != nil {
		return err
	}
	return checkUsers("RegistryUsers", c.RegistryUsers)
}

func checkUsers(field string, users []Credential) error {
	seen := make(map[string]bool, len(users))
	for _, u := range users {
		if u.User == "" {
			return fmt.Errorf("devstack: Config.%s: empty user name", field)
		}
		if seen[u.User] {
			return fmt.Errorf("devstack: Config.%s: user %q given twice", field, u.User)
		}
		seen[u.User] = true
	}
	return nil
}

// credentialsValue is a repeatable user:password flag.
type credentialsValue struct{ to *[]Credential }

func (v *credentialsValue) Set(s string) error {
	c, err := ParseCredential(s)
	if err != nil {
		return err
	}
	*v.to = append(*v.to, c)
	return nil
}

// String lists the users only: flag help and errors must not print
// passwords.
func (v *credentialsValue) String() string {
	if v.to == nil {
		return ""
	}
	users := make([]string, len(*v.to))
	for i, c := range *v.to {
		users[i] = c.User + ":***"
	}
	return strings.Join(users, ",")
}

func (*credentialsValue) Type() string { return "user:password" }
