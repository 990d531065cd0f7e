package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// maxCASAttempts bounds the compare-and-swap retry loop. Conflicts come only
// from concurrent writers of the same changefeed (a user and the owner), so a
// handful of retries is plenty; hitting the bound means something is writing
// in a loop and the caller should see it.
const maxCASAttempts = 16

// Store reads and writes one tidestream cluster's state in etcd.
type Store struct {
	cli  *clientv3.Client
	keys Keys
}

// New returns a Store over an etcd client. The client is owned by the caller.
func New(cli *clientv3.Client, keys Keys) *Store {
	return &Store{cli: cli, keys: keys}
}

// Keys returns the key layout the store uses.
func (s *Store) Keys() Keys { return s.keys }

// Client returns the underlying etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Changefeed is one changefeed as stored: the user's record and the system's
// status, with the mod revisions they were read at.
type Changefeed struct {
	Info   *pb.ChangefeedInfo
	Status *pb.ChangefeedStatus

	// infoCreateRev tells this changefeed from a removed one re-created
	// under the same id.
	infoRev, infoCreateRev, statusRev int64
}

// View merges info and status into the API's ChangefeedInfo (a copy).
func (c *Changefeed) View() *pb.ChangefeedInfo {
	v := proto.Clone(c.Info).(*pb.ChangefeedInfo)
	if c.Status != nil {
		v.State = c.Status.State
		v.Error = c.Status.Error
		v.CheckpointTs = c.Status.CheckpointTs
		v.ResolvedTs = c.Status.ResolvedTs
	}
	v.Revision = c.infoRev
	return v
}

// Fence guards an owner write: the write lands only while the election key
// Key still exists with CreateRevision Rev. The zero Fence guards nothing and
// is what user-initiated mutations pass.
type Fence struct {
	Key string
	Rev int64
}

func (f Fence) active() bool { return f.Key != "" }

var marshal = protojson.MarshalOptions{UseProtoNames: true}

// unmarshal tolerates fields a newer version added, so a rolling upgrade
// does not make old processes fail on new records.
var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// Create stores a new changefeed. It fails with cdcerr.ErrAlreadyExists if
// the id is taken in its namespace.
func (s *Store) Create(ctx context.Context, info *pb.ChangefeedInfo, st *pb.ChangefeedStatus) error {
	infoKey := s.keys.Info(info.Namespace, info.Id)
	ib, err := marshal.Marshal(stripStatus(info))
	if err != nil {
		return fmt.Errorf("store: encode changefeed %s/%s: %w", info.Namespace, info.Id, err)
	}
	sb, err := marshal.Marshal(st)
	if err != nil {
		return fmt.Errorf("store: encode status of %s/%s: %w", info.Namespace, info.Id, err)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(infoKey), "=", 0)).
		Then(clientv3.OpPut(infoKey, string(ib)), clientv3.OpPut(s.keys.Status(info.Namespace, info.Id), string(sb))).
		Commit()
	if err != nil {
		return etcdErr("create changefeed", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("changefeed %q already exists in namespace %q: %w", info.Id, info.Namespace, cdcerr.ErrAlreadyExists)
	}
	return nil
}

// stripStatus returns info without the fields that live in the status key,
// so the two records never disagree.
func stripStatus(info *pb.ChangefeedInfo) *pb.ChangefeedInfo {
	c := proto.Clone(info).(*pb.ChangefeedInfo)
	c.State = pb.ChangefeedState_CHANGEFEED_STATE_UNSPECIFIED
	c.Error = nil
	c.CheckpointTs = 0
	c.ResolvedTs = 0
	c.Revision = 0
	return c
}

// Get reads one changefeed, or fails with cdcerr.ErrNotFound.
func (s *Store) Get(ctx context.Context, namespace, id string) (*Changefeed, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.keys.Info(namespace, id)),
		clientv3.OpGet(s.keys.Status(namespace, id)),
	).Commit()
	if err != nil {
		return nil, etcdErr("get changefeed", err)
	}
	infoKVs := resp.Responses[0].GetResponseRange().Kvs
	if len(infoKVs) == 0 {
		return nil, fmt.Errorf("changefeed %q not found in namespace %q: %w", id, namespace, cdcerr.ErrNotFound)
	}
	cf := &Changefeed{Info: &pb.ChangefeedInfo{}, Status: &pb.ChangefeedStatus{}}
	if err := unmarshal.Unmarshal(infoKVs[0].Value, cf.Info); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", infoKVs[0].Key, err)
	}
	cf.infoRev, cf.infoCreateRev = infoKVs[0].ModRevision, infoKVs[0].CreateRevision
	if st := resp.Responses[1].GetResponseRange().Kvs; len(st) > 0 {
		if err := unmarshal.Unmarshal(st[0].Value, cf.Status); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", st[0].Key, err)
		}
		cf.statusRev = st[0].ModRevision
	}
	return cf, nil
}

// List reads every changefeed of a namespace ("" for all namespaces), in key
// order (namespace, then id).
func (s *Store) List(ctx context.Context, namespace string) ([]*Changefeed, error) {
	// Read both prefixes at one revision so a changefeed is never listed with
	// a status from after its removal.
	statusPrefix := s.keys.prefix + "/changefeed/status/"
	if namespace != "" {
		statusPrefix += namespace + "/"
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.keys.InfoPrefix(namespace), clientv3.WithPrefix()),
		clientv3.OpGet(statusPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, etcdErr("list changefeeds", err)
	}
	statuses := map[string]*pb.ChangefeedStatus{}
	statusRevs := map[string]int64{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		st := &pb.ChangefeedStatus{}
		if err := unmarshal.Unmarshal(kv.Value, st); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		statuses[string(kv.Key)] = st
		statusRevs[string(kv.Key)] = kv.ModRevision
	}
	var out []*Changefeed
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		ns, id, ok := s.keys.parseInfoKey(string(kv.Key))
		if !ok {
			continue
		}
		cf := &Changefeed{Info: &pb.ChangefeedInfo{}, infoRev: kv.ModRevision, infoCreateRev: kv.CreateRevision}
		if err := unmarshal.Unmarshal(kv.Value, cf.Info); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		sk := s.keys.Status(ns, id)
		cf.Status = statuses[sk]
		if cf.Status == nil {
			cf.Status = &pb.ChangefeedStatus{}
		}
		cf.statusRev = statusRevs[sk]
		out = append(out, cf)
	}
	return out, nil
}

// Update reads a changefeed, lets mutate change its Info and/or Status, and
// writes both back with compare-and-swap on both revisions read, retrying
// on conflict. It is for user state transitions (pause, resume): they write
// the status and must also move the info key's revision, so that an info
// update that checked the state concurrently fails its compare instead of
// landing on a changefeed that was resumed meanwhile (KEYS.md). mutate may
// be called several times and must not have side effects; an error from it
// aborts the update and is returned as is.
func (s *Store) Update(ctx context.Context, namespace, id string, fence Fence, mutate func(*Changefeed) error) (*Changefeed, error) {
	return s.cas(ctx, namespace, id, fence, infoRecord|statusRecord, mutate, false)
}

// UpdateInfo is a user's change of the configuration: it compares and
// writes only the info key, so the owner's status writes (checkpoints) in
// between never make it retry, and it never rewrites them. mutate may read
// Status (to check the state) but must not change it; doing so is refused.
// Only the user writes info, so there is no fence.
func (s *Store) UpdateInfo(ctx context.Context, namespace, id string, mutate func(*Changefeed) error) (*Changefeed, error) {
	return s.cas(ctx, namespace, id, Fence{}, infoRecord, mutate, false)
}

// UpdateStatus is a change the system makes (checkpoint, owner-decided
// state): it compares and writes only the status key (plus the fence), so
// a user's info update in between never makes it retry, and it never
// rewrites that update. mutate sees the Info read with the status but must
// not change it; doing so is refused. Deciding on that Info without
// comparing it is safe for the reason KEYS.md gives: info changes only
// while the changefeed is stopped or failed, and leaving those states
// writes the status key.
func (s *Store) UpdateStatus(ctx context.Context, namespace, id string, fence Fence, mutate func(*Changefeed) error) (*Changefeed, error) {
	return s.cas(ctx, namespace, id, fence, statusRecord, mutate, false)
}

// Delete reads a changefeed, lets check refuse the removal (it may also
// adjust the returned copy), and deletes both keys atomically.
func (s *Store) Delete(ctx context.Context, namespace, id string, fence Fence, check func(*Changefeed) error) (*Changefeed, error) {
	return s.cas(ctx, namespace, id, fence, infoRecord|statusRecord, check, true)
}

// records selects which of a changefeed's keys a read-modify-write owns:
// only those are compared and written.
type records uint8

const (
	infoRecord records = 1 << iota
	statusRecord
)

func (s *Store) cas(ctx context.Context, namespace, id string, fence Fence, owned records, mutate func(*Changefeed) error, del bool) (*Changefeed, error) {
	infoKey, statusKey := s.keys.Info(namespace, id), s.keys.Status(namespace, id)
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		cf, err := s.Get(ctx, namespace, id)
		if err != nil {
			return nil, err
		}
		// A change to a record this update does not write would be dropped
		// silently while the caller believes it stored; refuse it instead.
		var infoWas *pb.ChangefeedInfo
		var statusWas *pb.ChangefeedStatus
		if owned&infoRecord == 0 {
			infoWas = proto.Clone(cf.Info).(*pb.ChangefeedInfo)
		}
		if owned&statusRecord == 0 {
			statusWas = proto.Clone(cf.Status).(*pb.ChangefeedStatus)
		}
		if err := mutate(cf); err != nil {
			return nil, err
		}
		if infoWas != nil && !proto.Equal(infoWas, cf.Info) {
			return nil, fmt.Errorf("store: status update of changefeed %s/%s changed its info, which only the user's info update writes", namespace, id)
		}
		if statusWas != nil && !proto.Equal(statusWas, cf.Status) {
			return nil, fmt.Errorf("store: info update of changefeed %s/%s changed its status, which only status updates write", namespace, id)
		}
		var cmps []clientv3.Cmp
		if owned&infoRecord != 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(infoKey), "=", cf.infoRev))
		} else {
			// The same changefeed must still exist: without this a status
			// write could outlive a removal (and a re-create under the
			// same id) whenever the status key was missing when read.
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(infoKey), "=", cf.infoCreateRev))
		}
		if owned&statusRecord != 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(statusKey), "=", cf.statusRev))
		}
		if fence.active() {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(fence.Key), "=", fence.Rev))
		}
		var ops []clientv3.Op
		switch {
		case del:
			ops = []clientv3.Op{clientv3.OpDelete(infoKey), clientv3.OpDelete(statusKey)}
		default:
			if owned&infoRecord != 0 {
				ib, err := marshal.Marshal(stripStatus(cf.Info))
				if err != nil {
					return nil, fmt.Errorf("store: encode changefeed %s/%s: %w", namespace, id, err)
				}
				ops = append(ops, clientv3.OpPut(infoKey, string(ib)))
			}
			if owned&statusRecord != 0 {
				sb, err := marshal.Marshal(cf.Status)
				if err != nil {
					return nil, fmt.Errorf("store: encode status of %s/%s: %w", namespace, id, err)
				}
				ops = append(ops, clientv3.OpPut(statusKey, string(sb)))
			}
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, etcdErr("update changefeed", err)
		}
		if resp.Succeeded {
			if owned&infoRecord != 0 {
				cf.infoRev = resp.Header.Revision
			}
			if owned&statusRecord != 0 {
				cf.statusRev = resp.Header.Revision
			}
			return cf, nil
		}
		if fence.active() {
			if err := s.checkFence(ctx, fence); err != nil {
				return nil, err
			}
		}
	}
	return nil, fmt.Errorf("store: changefeed %s/%s changed concurrently %d times in a row: %w", namespace, id, maxCASAttempts, cdcerr.ErrUnavailable)
}

// checkFence tells a lost fence (ErrNotOwner) from an ordinary CAS conflict.
func (s *Store) checkFence(ctx context.Context, fence Fence) error {
	resp, err := s.cli.Get(ctx, fence.Key)
	if err != nil {
		return etcdErr("check owner fence", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != fence.Rev {
		return fmt.Errorf("store: owner key %s is gone or was re-created: %w", fence.Key, cdcerr.ErrNotOwner)
	}
	return nil
}

// FencedPut writes key=value only while fence holds; the primitive for owner
// writes that are not changefeed records (e.g. schema history, assignments).
func (s *Store) FencedPut(ctx context.Context, fence Fence, key, value string) error {
	if !fence.active() {
		return fmt.Errorf("store: FencedPut of %s without a fence", key)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(fence.Key), "=", fence.Rev)).
		Then(clientv3.OpPut(key, value)).
		Commit()
	if err != nil {
		return etcdErr("fenced put", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("store: write of %s refused, owner key %s lost: %w", key, fence.Key, cdcerr.ErrNotOwner)
	}
	return nil
}

// Members lists the registered members.
func (s *Store) Members(ctx context.Context) ([]*pb.Member, error) {
	resp, err := s.cli.Get(ctx, s.keys.MemberPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, etcdErr("list members", err)
	}
	out := make([]*pb.Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m := &pb.Member{}
		if err := unmarshal.Unmarshal(kv.Value, m); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// MarshalMember encodes a member record for its key.
func MarshalMember(m *pb.Member) (string, error) {
	b, err := marshal.Marshal(m)
	return string(b), err
}

// etcdErr classifies an etcd client error. Only errors known to be
// transient become ErrUnavailable (the client level retries only what is
// known transient, STYLE lesson 7); context errors pass through.
func etcdErr(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail), errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrLeaderChanged):
		return fmt.Errorf("store: %s: %v: %w", op, err, cdcerr.ErrUnavailable)
	}
	if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded {
		return fmt.Errorf("store: %s: %v: %w", op, err, cdcerr.ErrUnavailable)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}
