// Package cli is `cdc cli changefeed …` (and its ctl-style alias
// `cdc changefeed …`), `cdc cli capture list` and `cdc cli processor list`:
// TiCDC's commands, flags and output shapes, spoken to a tidestream server
// over the gRPC control API. Where we show more than TiCDC, it is in keys
// TiCDC does not use (`tidestream_pipelines` in `changefeed query`, `roles`
// in `capture list`), after TiCDC's own.
//
// Output goes to the command's stdout; a failure is one line on stderr and a
// non-zero exit (the caller turns the returned error into both). Secrets
// never reach the output: the server masks them and nothing here prints a
// flag value the user gave except through the server's reply.
package cli
