// Package tablefilter parses and evaluates TiDB table-filter rules, the
// `schema.table` pattern syntax TiCDC uses for `[filter] rules`, dispatcher
// matchers and column-selector matchers.
//
// It is responsible for the pattern language only: wildcards (`*`, `?`,
// `[a-z]`, `[!a-z]`, matched per Unicode code point), `/regex/` parts (Go RE2,
// unanchored, i.e. a substring match), `\` escapes, "…" and `…` quoted names,
// `!` exclusions and the "last matching rule decides" evaluation. It is not
// responsible for:
//
//   - reading `@file` imports: that is a CLI convenience, so Parse rejects
//     them and the CLI inlines the file before a changefeed reaches us;
//   - excluding system schemas: a Filter matches what its patterns say, and
//     changefeed code combines it with IsSystemSchema (see Replicable), so
//     the two concerns can be tested apart;
//   - knowing which tables exist.
package tablefilter
