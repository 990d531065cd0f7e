package store

import (
	"fmt"
	"strings"
)

// DefaultNamespace is the namespace of changefeeds created without one, as
// in TiCDC.
const DefaultNamespace = "default"

// Keys builds the etcd keys of one tidestream cluster (see KEYS.md).
type Keys struct {
	prefix string
}

// NewKeys returns the key layout for cluster. The cluster id must not
// contain '/', since it is one path segment.
func NewKeys(cluster string) (Keys, error) {
	if cluster == "" || strings.ContainsAny(cluster, "/ ") {
		return Keys{}, fmt.Errorf("store: cluster id %q must be non-empty and contain no '/' or space", cluster)
	}
	return Keys{prefix: "/tidestream/" + cluster}, nil
}

// Prefix is the root of every key of this cluster.
func (k Keys) Prefix() string { return k.prefix }

// MemberPrefix is the prefix of all member keys.
func (k Keys) MemberPrefix() string { return k.prefix + "/member/" }

// Member is the key of one member.
func (k Keys) Member(id string) string { return k.MemberPrefix() + id }

// OwnerPrefix is the election prefix of the owner campaign.
func (k Keys) OwnerPrefix() string { return k.prefix + "/owner/" }

// InfoPrefix is the prefix of changefeed info keys, optionally within a
// namespace.
func (k Keys) InfoPrefix(namespace string) string {
	if namespace == "" {
		return k.prefix + "/changefeed/info/"
	}
	return k.prefix + "/changefeed/info/" + namespace + "/"
}

// Info is the key of one changefeed's info.
func (k Keys) Info(namespace, id string) string { return k.InfoPrefix(namespace) + id }

// Status is the key of one changefeed's status.
func (k Keys) Status(namespace, id string) string {
	return k.prefix + "/changefeed/status/" + namespace + "/" + id
}

// parseInfoKey returns the namespace and id of an info key.
func (k Keys) parseInfoKey(key string) (namespace, id string, ok bool) {
	rest, found := strings.CutPrefix(key, k.InfoPrefix(""))
	if !found {
		return "", "", false
	}
	namespace, id, ok = strings.Cut(rest, "/")
	return namespace, id, ok && id != ""
}

// Cluster is the tidestream cluster id the keys belong to.
func (k Keys) Cluster() string { return strings.TrimPrefix(k.prefix, "/tidestream/") }
