// Package changefeed holds the rules of a changefeed's life that do not
// depend on storage: which ids are valid, the state names users see, and the
// legal state transitions. The control API and the owner both go through
// CheckTransition, so a changefeed cannot reach a state by a path the table
// below does not allow, whoever writes it.
package changefeed
