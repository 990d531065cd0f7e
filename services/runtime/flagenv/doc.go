// Package flagenv lets every command-line flag also be set from the
// environment: --data-dir from TIDESTREAM_DATA_DIR, --log-level from
// TIDESTREAM_LOG_LEVEL, and so on, which is how container platforms
// usually configure a process.
//
// It is responsible for: deriving the variable name from the flag name and
// a prefix, applying variables to flags the command line left unset (an
// explicit flag always wins), reporting every malformed variable at once
// with both the variable and the flag named, and optionally mentioning the
// variable in each flag's help text.
//
// It is not responsible for: config files, validating values beyond what
// the flag's own type parses (that is each Config's Validate), or warning
// about unknown variables under the prefix.
package flagenv
