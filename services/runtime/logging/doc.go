// Package logging builds the structured JSON logger every tidestream role
// uses, and applies the secret redactor to everything a record carries.
//
// It is responsible for: parsing --log-level and --log-file, choosing the
// output (a file opened for append, or a writer such as stderr), wrapping the
// slog JSON handler so that the message and every string-ish attribute value
// pass through Options.Redact before they are written, and small helpers that
// turn a nil logger into a discarding one.
//
// It is not responsible for: deciding what is a secret (main injects the
// redactor that knows sink-URI and registry credential shapes), log rotation
// (leave it to the platform: logrotate with copytruncate, or stderr collected
// by the container runtime), or installing a process-wide default logger —
// only main calls slog.SetDefault, if it wants to.
package logging
