package avro

import (
	"errors"
	"fmt"
)

// Handling modes, spelled as TiCDC's avro-decimal-handling-mode and
// avro-bigint-unsigned-handling-mode options so the sink URI value can be
// passed through unchanged.
const (
	DecimalPrecise = "precise" // DECIMAL as bytes with the decimal logical type
	DecimalString  = "string"  // DECIMAL as its text, e.g. "1.50"

	BigintUnsignedLong   = "long"   // BIGINT UNSIGNED reinterpreted as int64 (lossy above 2^63-1, as TiCDC)
	BigintUnsignedString = "string" // BIGINT UNSIGNED as base-10 text
)

// Sentinel errors; every error this package returns wraps one of them.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("avro: invalid config")
	// ErrSchema reports a table that cannot be expressed as an Avro schema
	// (unsupported column type, colliding field names, bad default).
	ErrSchema = errors.New("avro: cannot build schema")
	// ErrValue reports a datum that does not fit its column's type, or a row
	// whose image does not match the table.
	ErrValue = errors.New("avro: value does not fit column")
)

// Config is the codec part of a changefeed's configuration.
type Config struct {
	// DecimalHandling is DecimalPrecise (TiCDC's default) or DecimalString.
	DecimalHandling string
	// BigintUnsignedHandling is BigintUnsignedLong (TiCDC's default) or
	// BigintUnsignedString.
	BigintUnsignedHandling string
	// EnableTiDBExtension appends _tidb_op, _tidb_commit_ts and
	// _tidb_commit_physical_time to the value record.
	EnableTiDBExtension bool
	// Namespace is the changefeed namespace, the first part of every record
	// namespace ("default" in TiCDC unless -n was given).
	Namespace string
}

// DefaultConfig returns TiCDC's defaults.
func DefaultConfig() Config {
	return Config{
		DecimalHandling:        DecimalPrecise,
		BigintUnsignedHandling: BigintUnsignedLong,
		Namespace:              "default",
	}
}

// Validate reports the first invalid field, naming it and what it allows.
func (c *Config) Validate() error {
	switch c.DecimalHandling {
	case DecimalPrecise, DecimalString:
	default:
		return fmt.Errorf("%w: DecimalHandling %q: want %q or %q", ErrConfig, c.DecimalHandling, DecimalPrecise, DecimalString)
	}
	switch c.BigintUnsignedHandling {
	case BigintUnsignedLong, BigintUnsignedString:
	default:
		return fmt.Errorf("%w: BigintUnsignedHandling %q: want %q or %q", ErrConfig, c.BigintUnsignedHandling, BigintUnsignedLong, BigintUnsignedString)
	}
	if c.Namespace == "" || SanitizeName(c.Namespace) == "" {
		return fmt.Errorf("%w: Namespace %q: must be non-empty", ErrConfig, c.Namespace)
	}
	return nil
}
