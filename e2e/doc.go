// Package e2e holds tidestream's end-to-end tests: they start the real
// pieces as processes (the `cdc` binary, an external etcd, and later the
// playground and devstack) on loopback ports chosen at run time, drive them
// as a user would, and assert on the state they reach.
package e2e
